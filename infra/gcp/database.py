"""Cloud SQL for PostgreSQL 15: private IP only, TLS required, CMEK, backups with PITR."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from infra.settings import EnvironmentSettings
from infra.tagging import labels

DATABASE_NAME = "billing"
USERNAME = "billing"
PORT = 5432
# Cloud SQL keeps at most 7 days of write-ahead log for point-in-time recovery.
MAX_LOG_RETENTION_DAYS = 7
# Cloud SQL's default max_connections by instance memory (GiB lower bound -> connections),
# written out as a flag so the connections alert knows the ceiling it measures against.
_CONNECTIONS_BY_MEMORY_GIB = (
    (120.0, 1000), (60.0, 800), (30.0, 600), (15.0, 500),
    (7.5, 400), (6.0, 200), (3.75, 100), (1.7, 50), (0.0, 25),
)  # fmt: skip


def max_connections(tier: str) -> int:
    """The max_connections the instance runs with, from its tier's memory."""
    match = re.fullmatch(r"db-custom-\d+-(\d+)", tier)
    memory_gib = int(match.group(1)) / 1024 if match else 3.75
    return next(count for floor, count in _CONNECTIONS_BY_MEMORY_GIB if memory_gib >= floor)


@dataclass(frozen=True)
class DatabaseArgs:
    settings: EnvironmentSettings
    network_id: pulumi.Input[str]
    kms_key_id: pulumi.Input[str]
    password: pulumi.Input[str]
    # The private services peering and the key grant must exist before the instance.
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


class Database(pulumi.ComponentResource):
    """The billing ledger's PostgreSQL instance, its database and its application user."""

    instance_name: pulumi.Output[str]
    connection_name: pulumi.Output[str]
    private_ip_address: pulumi.Output[str]
    database_name: pulumi.Output[str]
    username: pulumi.Output[str]

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Database", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        database = settings.database
        child = pulumi.ResourceOptions(parent=self)
        # protect: replacing or deleting the instance (or its database) loses the ledger.
        stateful = pulumi.ResourceOptions(parent=self, protect=settings.is_production)

        instance = gcp.sql.DatabaseInstance(
            f"{name}-instance",
            gcp.sql.DatabaseInstanceArgs(
                name=f"billing-{settings.name}-postgres",
                database_version=f"POSTGRES_{database.engine_version.split('.')[0]}",
                region=settings.gcp.region,
                encryption_key_name=args.kms_key_id,
                # Terraform-level guard; settings.deletion_protection_enabled is the API-level one.
                deletion_protection=database.deletion_protection,
                settings=gcp.sql.DatabaseInstanceSettingsArgs(
                    tier=database.cloud_sql_tier,
                    # Custom machine tiers exist only in the Enterprise edition.
                    edition="ENTERPRISE",
                    availability_type="REGIONAL" if database.multi_az else "ZONAL",
                    disk_type="PD_SSD",
                    disk_size=database.allocated_storage_gb,
                    disk_autoresize=True,
                    disk_autoresize_limit=database.max_allocated_storage_gb,
                    deletion_protection_enabled=database.deletion_protection,
                    ip_configuration=gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
                        ipv4_enabled=False,
                        private_network=args.network_id,
                        ssl_mode="ENCRYPTED_ONLY",
                    ),
                    backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                        enabled=True,
                        point_in_time_recovery_enabled=True,
                        start_time="02:00",
                        transaction_log_retention_days=min(
                            database.backup_retention_days, MAX_LOG_RETENTION_DAYS
                        ),
                        # One automated backup a day: keeping N backups keeps N days.
                        backup_retention_settings=gcp.sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                            retained_backups=database.backup_retention_days,
                            retention_unit="COUNT",
                        ),
                    ),
                    maintenance_window=gcp.sql.DatabaseInstanceSettingsMaintenanceWindowArgs(
                        day=7, hour=3, update_track="stable"
                    ),
                    insights_config=gcp.sql.DatabaseInstanceSettingsInsightsConfigArgs(
                        query_insights_enabled=True,
                        query_string_length=1024,
                        record_application_tags=True,
                        record_client_address=False,
                    ),
                    database_flags=[
                        gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs(
                            name="max_connections",
                            value=str(max_connections(database.cloud_sql_tier)),
                        ),
                        gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs(
                            name="log_min_duration_statement", value="1000"
                        ),
                    ],
                    user_labels=labels(settings, "database"),
                ),
            ),
            opts=pulumi.ResourceOptions.merge(
                stateful, pulumi.ResourceOptions(depends_on=list(args.depends_on))
            ),
        )
        ledger = gcp.sql.Database(
            f"{name}-database",
            gcp.sql.DatabaseArgs(
                name=DATABASE_NAME,
                instance=instance.name,
                # Dropping the database on `destroy` would be the one step no backup undoes.
                deletion_policy="ABANDON",
            ),
            opts=stateful,
        )
        user = gcp.sql.User(
            f"{name}-user",
            gcp.sql.UserArgs(
                name=USERNAME,
                instance=instance.name,
                password=args.password,
                # The user owns the schema: PostgreSQL refuses to drop it while tables exist.
                deletion_policy="ABANDON",
            ),
            opts=child,
        )

        self.instance_name = instance.name
        self.connection_name = instance.connection_name
        self.private_ip_address = instance.private_ip_address
        self.database_name = ledger.name
        self.username = user.name
        self.register_outputs(
            {
                "instance_name": self.instance_name,
                "connection_name": self.connection_name,
                "private_ip_address": self.private_ip_address,
                "database_name": self.database_name,
                "username": self.username,
            }
        )
