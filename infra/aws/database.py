"""AWS data: the RDS PostgreSQL database the ledger lives in, and its credentials secret."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.firewall import POSTGRES_PORT
from infra.settings import EnvironmentSettings
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
    security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    password: pulumi.Input[str]
    # The secret the database writes its connection details (and the password) into.
    credentials_secret_id: pulumi.Input[str]


class Database(pulumi.ComponentResource):
    """An encrypted, private PostgreSQL 15 instance sized and backed up per environment."""

    identifier: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    address: pulumi.Output[str]
    port: pulumi.Output[int]

    def __init__(
        self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Database", name, None, opts)
        settings = args.settings
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
        # RDS would create these groups itself, unencrypted and kept forever.
        log_groups = [
            aws.cloudwatch.LogGroup(
                f"{name}-log-{export}",
                aws.cloudwatch.LogGroupArgs(
                    name=f"/aws/rds/instance/{identifier}/{export}",
                    retention_in_days=settings.logs.retention_days,
                    kms_key_id=args.logs_key_arn,
                    tags=tags(settings),
                ),
                # protect: the database's own audit trail.
                opts=pulumi.ResourceOptions(parent=self, protect=production),
            )
            for export in LOG_EXPORTS
        ]

        instance = aws.rds.Instance(
            f"{name}-instance",
            aws.rds.InstanceArgs(
                identifier=identifier,
                engine="postgres",
                engine_version=db.engine_version,
                instance_class=db.instance_class,
                allocated_storage=db.allocated_storage_gb,
                # Storage autoscaling up to this ceiling.
                max_allocated_storage=db.max_allocated_storage_gb,
                storage_type="gp3",
                storage_encrypted=True,
                kms_key_id=args.kms_key_arn,
                db_name=DATABASE_NAME,
                username=DATABASE_USERNAME,
                password=args.password,
                port=POSTGRES_PORT,
                db_subnet_group_name=subnet_group.name,
                vpc_security_group_ids=[args.security_group_id],
                parameter_group_name=parameters.name,
                publicly_accessible=False,
                multi_az=db.multi_az,
                backup_retention_period=db.backup_retention_days,
                backup_window=BACKUP_WINDOW,
                maintenance_window=MAINTENANCE_WINDOW,
                copy_tags_to_snapshot=True,
                # Automated backups outlive the instance: a deleted database can be restored.
                delete_automated_backups=False,
                deletion_protection=db.deletion_protection,
                skip_final_snapshot=not production,
                final_snapshot_identifier=f"{identifier}-final" if production else None,
                performance_insights_enabled=True,
                performance_insights_kms_key_id=args.kms_key_arn,
                performance_insights_retention_period=7,
                monitoring_interval=MONITORING_INTERVAL,
                monitoring_role_arn=monitoring_role.arn,
                enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
                auto_minor_version_upgrade=True,
                # Changes wait for the maintenance window instead of restarting now.
                apply_immediately=False,
                tags=tags(settings),
            ),
            # protect: the ledger lives here. retain_on_delete: a replacement (a new identifier,
            # engine or encryption key) must leave the old instance, with its data, in place.
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=production,
                retain_on_delete=production,
                depends_on=[*log_groups, monitoring_policy],
            ),
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-credentials",
            aws.secretsmanager.SecretVersionArgs(
                secret_id=args.credentials_secret_id,
                # The password makes the whole document secret.
                secret_string=pulumi.Output.all(
                    instance.address, instance.port, args.password
                ).apply(
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

        self.identifier = instance.identifier
        self.endpoint = instance.endpoint
        self.address = instance.address
        self.port = instance.port
        self.register_outputs(
            {
                "identifier": self.identifier,
                "endpoint": self.endpoint,
                "address": self.address,
                "port": self.port,
            }
        )
