"""AWS data: the RDS PostgreSQL database the ledger lives in, and its credentials secret."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.firewall import POSTGRES_PORT
from infra.settings import EnvironmentSettings, OriginalDatabase
from infra.tagging import tags

DATABASE_NAME = "billing"
DATABASE_USERNAME = "billing"
# UTC windows from the seeds: backups first, then maintenance, never overlapping.
BACKUP_WINDOW = "03:00-04:00"
MAINTENANCE_WINDOW = "mon:04:00-mon:05:00"
# Seconds between enhanced-monitoring samples.
MONITORING_INTERVAL = 60
# Statements slower than this (ms) are logged.
SLOW_STATEMENT_MS = 500
LOG_EXPORTS = ("postgresql", "upgrade")


@dataclass(frozen=True)
class DatabaseArgs:
    settings: EnvironmentSettings
    subnet_ids: pulumi.Input[list[str]]
    # The VPC's zones in order; replica n goes to zone n (the serving instance picks its own).
    zones: pulumi.Output[list[str]]
    security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    password: pulumi.Input[str]
    # The secret the database writes its connection details (and the password) into.
    credentials_secret_id: pulumi.Input[str]


def _zone(index: int, zones: list[str]) -> str:
    """Replica n's zone: the n-th after the first, wrapping round."""
    return zones[index % len(zones)]


class Database(pulumi.ComponentResource):
    """An encrypted, private PostgreSQL 15 instance sized and backed up per environment."""

    identifier: pulumi.Output[str]
    replica_identifiers: list[pulumi.Output[str]]
    read_address: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    address: pulumi.Output[str]
    port: pulumi.Output[int]

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Database", name, None, opts)
        settings = args.settings
        self._settings = settings
        db = settings.database
        production = settings.is_production
        child = pulumi.ResourceOptions(parent=self)
        identifier = f"billing-{settings.name}"

        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            aws.rds.SubnetGroupArgs(
                name=identifier,
                description="Data-tier subnets",
                subnet_ids=args.subnet_ids,
                tags=tags(settings),
            ),
            opts=child,
        )
        major = db.engine_version.split(".")[0]
        parameters = aws.rds.ParameterGroup(
            f"{name}-parameters",
            aws.rds.ParameterGroupArgs(
                name=f"{identifier}-postgres{major}",
                family=f"postgres{major}",
                description="TLS required; connections and slow statements logged",
                parameters=[
                    aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                    aws.rds.ParameterGroupParameterArgs(name="log_connections", value="1"),
                    aws.rds.ParameterGroupParameterArgs(name="log_disconnections", value="1"),
                    aws.rds.ParameterGroupParameterArgs(
                        name="log_min_duration_statement", value=str(SLOW_STATEMENT_MS)
                    ),
                    aws.rds.ParameterGroupParameterArgs(name="log_lock_waits", value="1"),
                ],
                tags=tags(settings),
            ),
            opts=child,
        )
        monitoring_role = aws.iam.Role(
            f"{name}-monitoring-role",
            aws.iam.RoleArgs(
                description="RDS enhanced monitoring",
                assume_role_policy=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "monitoring.rds.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                ),
                tags=tags(settings),
            ),
            opts=child,
        )
        monitoring_policy = aws.iam.RolePolicyAttachment(
            f"{name}-monitoring-policy",
            aws.iam.RolePolicyAttachmentArgs(
                role=monitoring_role.name,
                policy_arn="arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole",
            ),
            opts=child,
        )
        log_groups = self._log_groups(name, identifier, args)
        restore = db.restore
        original = OriginalDatabase.KEEP if restore is None else restore.original
        common: dict[str, Any] = {
            "engine_version": db.engine_version,
            "instance_class": db.instance_class,
            "allocated_storage": db.allocated_storage_gb,
            # Storage autoscaling up to this ceiling.
            "max_allocated_storage": db.max_allocated_storage_gb,
            "storage_type": "gp3",
            "storage_encrypted": True,
            "kms_key_id": args.kms_key_arn,
            "password": args.password,
            "port": POSTGRES_PORT,
            "vpc_security_group_ids": [args.security_group_id],
            "parameter_group_name": parameters.name,
            "publicly_accessible": False,
            "multi_az": db.multi_az,
            "backup_retention_period": db.backup_retention_days,
            "backup_window": BACKUP_WINDOW,
            "maintenance_window": MAINTENANCE_WINDOW,
            "copy_tags_to_snapshot": True,
            # Automated backups outlive the instance: a deleted database can be restored.
            "delete_automated_backups": False,
            "skip_final_snapshot": not production,
            "performance_insights_enabled": True,
            "performance_insights_kms_key_id": args.kms_key_arn,
            "performance_insights_retention_period": 7,
            "monitoring_interval": MONITORING_INTERVAL,
            "monitoring_role_arn": monitoring_role.arn,
            "enabled_cloudwatch_logs_exports": list(LOG_EXPORTS),
            "auto_minor_version_upgrade": True,
            # Changes wait for the maintenance window instead of restarting now.
            "apply_immediately": False,
            "tags": tags(settings),
        }
        after = [*log_groups, monitoring_policy]

        instance: aws.rds.Instance | None = None
        if original is not OriginalDatabase.REMOVE:
            kept = original is OriginalDatabase.KEEP
            instance = aws.rds.Instance(
                f"{name}-instance",
                aws.rds.InstanceArgs(
                    identifier=identifier,
                    engine="postgres",
                    db_name=DATABASE_NAME,
                    username=DATABASE_USERNAME,
                    db_subnet_group_name=subnet_group.name,
                    deletion_protection=db.deletion_protection and kept,
                    final_snapshot_identifier=f"{identifier}-final" if production else None,
                    **common,
                ),
                # protect: the ledger lives here. retain_on_delete: a replacement (a new
                # identifier, engine or encryption key) must leave the old instance, with its
                # data, in place. A restore releases it only one pull request after the switch.
                # Released, it is deleted for real by the change that removes it (with a final
                # snapshot, its automated backups kept).
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=production and kept,
                    retain_on_delete=production and kept,
                    depends_on=after,
                ),
            )
        restored: aws.rds.Instance | None = None
        if restore is not None:
            restored_id = f"{identifier}-{restore.id}"
            # A restore always creates a new instance (RDS RestoreDBInstanceToPointInTime /
            # RestoreDBInstanceFromDBSnapshot); the provider's restore_to_point_in_time block needs
            # the new identifier (hashicorp/terraform-provider-aws#15969). The password is applied
            # after the restore (hashicorp/terraform-provider-aws#35566); the user and database
            # name come from the source, so they are not set (hashicorp/terraform#4857).
            restored = aws.rds.Instance(
                f"{name}-restore-{restore.id}",
                aws.rds.InstanceArgs(
                    identifier=restored_id,
                    engine="postgres",
                    db_subnet_group_name=subnet_group.name,
                    restore_to_point_in_time=None
                    if restore.restore_time is None
                    else aws.rds.InstanceRestoreToPointInTimeArgs(
                        source_db_instance_identifier=identifier,
                        restore_time=restore.restore_time,
                    ),
                    snapshot_identifier=None if restore.restore_time else restore.snapshot,
                    deletion_protection=db.deletion_protection,
                    final_snapshot_identifier=f"{restored_id}-final" if production else None,
                    **common,
                ),
                # protect: once the services switch, the ledger lives here.
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=production,
                    retain_on_delete=production,
                    depends_on=[
                        *self._log_groups(f"{name}-restore-{restore.id}", restored_id, args),
                        monitoring_policy,
                        *([instance] if instance else []),
                    ],
                ),
            )
        serving = restored if restored is not None and restore and restore.switch else instance
        if serving is None:  # pragma: no cover - the loader refuses remove without switch
            raise ValueError("no database instance serves the environment")

        replicas = [
            aws.rds.Instance(
                f"{name}-replica-{index}",
                aws.rds.InstanceArgs(
                    identifier=f"{identifier}-replica-{index}",
                    # Same region: the source's identifier; the replica inherits the engine,
                    # subnet group, user and data (pulumi_aws rds.Instance replicate_source_db;
                    # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ReadRepl.html).
                    replicate_source_db=serving.identifier,
                    instance_class=db.instance_class,
                    availability_zone=args.zones.apply(partial(_zone, index)),
                    storage_type="gp3",
                    storage_encrypted=True,
                    kms_key_id=args.kms_key_arn,
                    vpc_security_group_ids=[args.security_group_id],
                    parameter_group_name=parameters.name,
                    publicly_accessible=False,
                    # A replica holds no data of its own: no backups, no final snapshot.
                    backup_retention_period=0,
                    skip_final_snapshot=True,
                    performance_insights_enabled=True,
                    performance_insights_kms_key_id=args.kms_key_arn,
                    performance_insights_retention_period=7,
                    monitoring_interval=MONITORING_INTERVAL,
                    monitoring_role_arn=monitoring_role.arn,
                    auto_minor_version_upgrade=True,
                    apply_immediately=False,
                    tags=tags(settings, "replica"),
                ),
                # Not protected: rebuilt from the serving instance, never the only copy.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[serving]),
            )
            for index in range(1, db.read_replicas + 1)
        ]
        if settings.aws is not None and settings.aws.backup_region is not None:
            self._copy_backups(name, settings.aws.backup_region, serving)

        aws.secretsmanager.SecretVersion(
            f"{name}-credentials",
            aws.secretsmanager.SecretVersionArgs(
                secret_id=args.credentials_secret_id,
                # The password makes the whole document secret.
                secret_string=pulumi.Output.all(serving.address, serving.port, args.password).apply(
                    lambda values: json.dumps(
                        {
                            "engine": "postgres",
                            "host": values[0],
                            "port": values[1],
                            "dbname": DATABASE_NAME,
                            "username": DATABASE_USERNAME,
                            "password": values[2],
                        }
                    )
                ),
            ),
            # protect: without the password the ledger is unreachable.
            opts=pulumi.ResourceOptions(parent=self, protect=production),
        )

        self.identifier = serving.identifier
        self.endpoint = serving.endpoint
        self.address = serving.address
        self.port = serving.port
        self.replica_identifiers = [replica.identifier for replica in replicas]
        # libpq takes a comma-separated host list and, from PostgreSQL 16, load_balance_hosts
        # spreads connections over it (https://www.postgresql.org/docs/current/libpq-connect.html
        # "Specifying Multiple Hosts"); without replicas reads go to the serving instance.
        self.read_address = (
            pulumi.Output.all(*[replica.address for replica in replicas]).apply(",".join)
            if replicas
            else serving.address
        )
        self.register_outputs(
            {
                "identifier": self.identifier,
                "endpoint": self.endpoint,
                "address": self.address,
                "port": self.port,
                "replica_identifiers": self.replica_identifiers,
                "read_address": self.read_address,
            }
        )

    def _log_groups(
        self, name: str, identifier: str, args: DatabaseArgs
    ) -> list[aws.cloudwatch.LogGroup]:
        """The instance's exported logs: RDS would create these groups unencrypted, kept forever."""
        settings = self._settings
        return [
            aws.cloudwatch.LogGroup(
                f"{name}-log-{export}",
                aws.cloudwatch.LogGroupArgs(
                    name=f"/aws/rds/instance/{identifier}/{export}",
                    retention_in_days=settings.logs.retention_days,
                    kms_key_id=args.logs_key_arn,
                    tags=tags(settings),
                ),
                # protect: the database's own audit trail.
                opts=pulumi.ResourceOptions(parent=self, protect=settings.is_production),
            )
            for export in LOG_EXPORTS
        ]

    def _copy_backups(self, name: str, region: str, serving: aws.rds.Instance) -> None:
        """Replicate the serving instance's automated backups (and PITR logs) to ``region``."""
        settings = self._settings
        production = settings.is_production
        # The copies are encrypted with a key of the destination region (RDS
        # StartDBInstanceAutomatedBackupsReplication, KmsKeyId); pulumi-aws v7 places a resource
        # in another region with its `region` argument, so no second provider is needed.
        key = aws.kms.Key(
            f"{name}-backup-copies-key",
            aws.kms.KeyArgs(
                region=region,
                description=f"billing {settings.name}: database backup copies",
                enable_key_rotation=True,
                rotation_period_in_days=365,
                deletion_window_in_days=30,
                tags=tags(settings),
            ),
            # protect, retain_on_delete: the copies are unreadable without it.
            opts=pulumi.ResourceOptions(
                parent=self, protect=production, retain_on_delete=production
            ),
        )
        # Created in the destination region (Pulumi registry, InstanceAutomatedBackupsReplication:
        # "has to be created in the destination region").
        aws.rds.InstanceAutomatedBackupsReplication(
            f"{name}-backup-copies",
            aws.rds.InstanceAutomatedBackupsReplicationArgs(
                region=region,
                source_db_instance_arn=serving.arn,
                retention_period=settings.database.backup_retention_days,
                kms_key_id=key.arn,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
