"""Cloud SQL for PostgreSQL 15: private IP only, TLS required, CMEK, backups with PITR."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from infra.settings import EnvironmentSettings, OriginalDatabase
from infra.tagging import labels

DATABASE_NAME = "billing"
USERNAME = "billing"
PORT = 5432
EDITION = "ENTERPRISE"
# Cloud SQL keeps at most 7 days of write-ahead log for point-in-time recovery.
MAX_LOG_RETENTION_DAYS = 7
# Cloud SQL's default max_connections by instance memory (GiB lower bound -> connections),
# written out as a flag so the connections alert knows the ceiling it measures against.
_CONNECTIONS_BY_MEMORY_GIB = (
    (120.0, 1000),
    (60.0, 800),
    (30.0, 600),
    (15.0, 500),
    (7.5, 400),
    (6.0, 200),
    (3.75, 100),
    (1.7, 50),
    (0.0, 25),
)


def max_connections(tier: str) -> int:
    """The max_connections the instance runs with, from its tier's memory."""
    match = re.fullmatch(r"db-custom-\d+-(\d+)", tier)
    memory_gib = int(match.group(1)) / 1024 if match else 3.75
    return next(count for floor, count in _CONNECTIONS_BY_MEMORY_GIB if memory_gib >= floor)


def backup_retention(days: int) -> tuple[int, int]:
    """(transaction-log days, retained backups) for ``days`` of point-in-time recovery.

    Cloud SQL refuses retained backups that are not greater than the log retention
    ("Error 400: Invalid request: backup retention should be > transaction log retention",
    terraform-google-modules/terraform-google-sql-db#785), and ENTERPRISE keeps 1-7 days of log.
    """
    log_days = min(days, MAX_LOG_RETENTION_DAYS)
    return log_days, max(days, log_days + 1)


@dataclass(frozen=True)
class DatabaseArgs:
    settings: EnvironmentSettings
    network_id: pulumi.Input[str]
    kms_key_id: pulumi.Input[str]
    password: pulumi.Input[str]
    # The private services range's name: a clone takes its address from it.
    private_services_range: pulumi.Input[str]
    # The private services peering and the key grant must exist before the instance.
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


class Database(pulumi.ComponentResource):
    """The billing ledger's PostgreSQL instance, its database and its application user."""

    instance_name: pulumi.Output[str]
    connection_name: pulumi.Output[str]
    private_ip_address: pulumi.Output[str]
    database_name: pulumi.Output[str]
    username: pulumi.Output[str]
    replica_names: list[pulumi.Output[str]]
    read_address: pulumi.Output[str]

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Database", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        self._settings = settings
        database = settings.database
        child = pulumi.ResourceOptions(parent=self)

        restore = database.restore
        original = OriginalDatabase.KEEP if restore is None else restore.original
        base_name = f"billing-{settings.name}-postgres"
        after = pulumi.ResourceOptions(depends_on=list(args.depends_on))

        instance: gcp.sql.DatabaseInstance | None = None
        user: gcp.sql.User | None = None
        ledger: gcp.sql.Database | None = None
        if original is not OriginalDatabase.REMOVE:
            kept = original is OriginalDatabase.KEEP
            instance = gcp.sql.DatabaseInstance(
                f"{name}-instance",
                self._instance_args(base_name, args, protected=kept),
                # protect: replacing or deleting the instance loses the ledger; a restore
                # releases it one pull request after the services switched away.
                opts=pulumi.ResourceOptions.merge(
                    pulumi.ResourceOptions(parent=self, protect=settings.is_production and kept),
                    after,
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
                opts=pulumi.ResourceOptions(parent=self, protect=settings.is_production and kept),
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
        restored: gcp.sql.DatabaseInstance | None = None
        if restore is not None:
            # A point in time is a clone of the live instance (Cloud SQL instances.clone with
            # pointInTime: always a new instance; hashicorp/terraform-provider-google#272,
            # GoogleCloudPlatform/magic-modules#4431); a backup is restored into the new instance
            # (restore_backup_context). Both bring the database and its users along, so neither
            # is declared again.
            restored = gcp.sql.DatabaseInstance(
                f"{name}-restore-{restore.id}",
                self._instance_args(
                    f"{base_name}-{restore.id}",
                    args,
                    protected=True,
                    clone=None
                    if restore.restore_time is None
                    else gcp.sql.DatabaseInstanceCloneArgs(
                        source_instance_name=base_name,
                        point_in_time=restore.restore_time,
                        allocated_ip_range=args.private_services_range,
                    ),
                    restore_backup_context=None
                    if restore.backup_id is None or restore.restore_time is not None
                    else gcp.sql.DatabaseInstanceRestoreBackupContextArgs(
                        backup_run_id=restore.backup_id, instance_id=base_name
                    ),
                ),
                opts=pulumi.ResourceOptions.merge(
                    pulumi.ResourceOptions(
                        parent=self,
                        protect=settings.is_production,
                        depends_on=[instance] if instance is not None else [],
                    ),
                    after,
                ),
            )
        serving = restored if restored is not None and restore and restore.switch else instance
        if serving is None:  # pragma: no cover - the loader refuses remove without switch
            raise ValueError("no database instance serves the environment")

        zones = settings.gcp.zones
        replicas = [
            gcp.sql.DatabaseInstance(
                f"{name}-replica-{index}",
                self._replica_args(f"{base_name}-replica-{index}", serving, args, zones, index),
                # Not protected: rebuilt from the serving instance, never the only copy.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[serving]),
            )
            for index in range(1, database.read_replicas + 1)
        ]

        self.replica_names = [replica.name for replica in replicas]
        # libpq's comma-separated host list (see infra/aws/data.py); the primary without replicas.
        self.read_address = (
            pulumi.Output.all(*[r.private_ip_address for r in replicas]).apply(",".join)
            if replicas
            else serving.private_ip_address
        )
        instance = serving
        self.instance_name = instance.name
        self.connection_name = instance.connection_name
        self.private_ip_address = instance.private_ip_address
        self.database_name = ledger.name if ledger else pulumi.Output.from_input(DATABASE_NAME)
        self.username = user.name if user else pulumi.Output.from_input(USERNAME)
        self.register_outputs(
            {
                "instance_name": self.instance_name,
                "connection_name": self.connection_name,
                "private_ip_address": self.private_ip_address,
                "database_name": self.database_name,
                "username": self.username,
                "replica_names": self.replica_names,
                "read_address": self.read_address,
            }
        )

    def _instance_args(
        self,
        instance_name: str,
        args: DatabaseArgs,
        *,
        protected: bool,
        clone: gcp.sql.DatabaseInstanceCloneArgs | None = None,
        restore_backup_context: gcp.sql.DatabaseInstanceRestoreBackupContextArgs | None = None,
    ) -> gcp.sql.DatabaseInstanceArgs:
        settings = self._settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        database = settings.database
        protection = database.deletion_protection and protected
        log_days, backups = backup_retention(database.backup_retention_days)
        return gcp.sql.DatabaseInstanceArgs(
            name=instance_name,
            database_version=f"POSTGRES_{database.engine_version.split('.')[0]}",
            region=settings.gcp.region,
            encryption_key_name=args.kms_key_id,
            # Terraform-level guard; settings.deletion_protection_enabled is the API-level one.
            deletion_protection=protection,
            clone=clone,
            restore_backup_context=restore_backup_context,
            settings=gcp.sql.DatabaseInstanceSettingsArgs(
                tier=database.cloud_sql_tier,
                # Custom machine tiers exist only in the Enterprise edition, set explicitly:
                # new PostgreSQL 16+ instances default to ENTERPRISE_PLUS, which refuses them
                # (https://cloud.google.com/sql/docs/editions-intro).
                edition=EDITION,
                availability_type="REGIONAL" if database.multi_az else "ZONAL",
                disk_type="PD_SSD",
                disk_size=database.allocated_storage_gb,
                disk_autoresize=True,
                disk_autoresize_limit=database.max_allocated_storage_gb,
                deletion_protection_enabled=protection,
                ip_configuration=self._ip_configuration(args),
                backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=True,
                    point_in_time_recovery_enabled=True,
                    start_time="02:00",
                    # Backups kept in another location survive the loss of the region
                    # (https://cloud.google.com/sql/docs/postgres/locations: multi-regional
                    # locations are used only for backups).
                    location=settings.gcp.backup_location,
                    transaction_log_retention_days=log_days,
                    # One automated backup a day: keeping N backups keeps N days.
                    backup_retention_settings=gcp.sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                        retained_backups=backups,
                        retention_unit="COUNT",
                    ),
                ),
                maintenance_window=gcp.sql.DatabaseInstanceSettingsMaintenanceWindowArgs(
                    day=7, hour=3, update_track="stable"
                ),
                insights_config=self._insights(),
                database_flags=self._flags(),
                user_labels=labels(settings, "database"),
            ),
        )

    def _replica_args(
        self,
        instance_name: str,
        serving: gcp.sql.DatabaseInstance,
        args: DatabaseArgs,
        zones: Sequence[str],
        index: int,
    ) -> gcp.sql.DatabaseInstanceArgs:
        """A read replica: zonal, in its own zone, without backups (Cloud SQL refuses backups on
        replicas: GoogleCloudPlatform/magic-modules#6836)."""
        settings = self._settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        database = settings.database
        return gcp.sql.DatabaseInstanceArgs(
            name=instance_name,
            master_instance_name=serving.name,
            database_version=f"POSTGRES_{database.engine_version.split('.')[0]}",
            region=settings.gcp.region,
            encryption_key_name=args.kms_key_id,
            deletion_protection=False,
            settings=gcp.sql.DatabaseInstanceSettingsArgs(
                tier=database.cloud_sql_tier,
                edition=EDITION,
                availability_type="ZONAL",
                disk_type="PD_SSD",
                disk_autoresize=True,
                disk_autoresize_limit=database.max_allocated_storage_gb,
                ip_configuration=self._ip_configuration(args),
                location_preference=gcp.sql.DatabaseInstanceSettingsLocationPreferenceArgs(
                    zone=zones[index % len(zones)]
                )
                if zones
                else None,
                backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
                    enabled=False
                ),
                insights_config=self._insights(),
                database_flags=self._flags(),
                user_labels=labels(settings, "database-replica"),
            ),
        )

    @staticmethod
    def _ip_configuration(
        args: DatabaseArgs,
    ) -> gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs:
        return gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
            ipv4_enabled=False, private_network=args.network_id, ssl_mode="ENCRYPTED_ONLY"
        )

    @staticmethod
    def _insights() -> gcp.sql.DatabaseInstanceSettingsInsightsConfigArgs:
        return gcp.sql.DatabaseInstanceSettingsInsightsConfigArgs(
            query_insights_enabled=True,
            query_string_length=1024,
            record_application_tags=True,
            record_client_address=False,
        )

    def _flags(self) -> list[gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs]:
        tier = self._settings.database.cloud_sql_tier
        return [
            gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs(
                name="max_connections", value=str(max_connections(tier))
            ),
            gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs(
                name="log_min_duration_statement", value="1000"
            ),
        ]
