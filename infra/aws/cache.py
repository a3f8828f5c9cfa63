"""AWS cache: an ElastiCache Redis 7 replication group, encrypted at rest and in transit."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.firewall import REDIS_PORT
from infra.settings import EnvironmentSettings
from infra.tagging import tags

ENGINE_VERSION = "7.1"
PARAMETER_FAMILY = "redis7"
SNAPSHOT_RETENTION_DAYS = 7
# UTC; the snapshot window from the seeds, maintenance after it so they never overlap.
SNAPSHOT_WINDOW = "03:00-05:00"
MAINTENANCE_WINDOW = "mon:05:00-mon:06:00"


def member_cluster_ids(replication_group_id: str, nodes: int) -> list[str]:
    """The node ids ElastiCache gives a replication group's members (per-node metrics use them)."""
    return [f"{replication_group_id}-{index + 1:03d}" for index in range(nodes)]


@dataclass(frozen=True)
class CacheArgs:
    settings: EnvironmentSettings
    subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    auth_token: pulumi.Input[str]


class Cache(pulumi.ComponentResource):
    """Redis for sessions, rate limits and idempotency keys."""

    replication_group_id: pulumi.Output[str]
    primary_endpoint: pulumi.Output[str]
    port: pulumi.Output[int]
    member_ids: list[str]

    def __init__(
        self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Cache", name, None, opts)
        settings = args.settings
        production = settings.is_production
        nodes = settings.cache.nodes
        child = pulumi.ResourceOptions(parent=self)
        group_id = f"billing-{settings.name}"
        # Failover needs a replica to promote; with one, the group also spreads across AZs.
        replicated = nodes >= 2

        subnet_group = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            aws.elasticache.SubnetGroupArgs(
                name=group_id,
                description="Data-tier subnets",
                subnet_ids=args.subnet_ids,
                tags=tags(settings),
            ),
            opts=child,
        )
        parameters = aws.elasticache.ParameterGroup(
            f"{name}-parameters",
            aws.elasticache.ParameterGroupArgs(
                name=f"{group_id}-{PARAMETER_FAMILY}",
                family=PARAMETER_FAMILY,
                description="Evict least-recently-used keys that carry a TTL",
                parameters=[
                    aws.elasticache.ParameterGroupParameterArgs(
                        name="maxmemory-policy", value="volatile-lru"
                    )
                ],
                tags=tags(settings),
            ),
            opts=child,
        )
        slow_log = aws.cloudwatch.LogGroup(
            f"{name}-slow-log",
            aws.cloudwatch.LogGroupArgs(
                name=f"/aws/elasticache/{group_id}/slow-log",
                retention_in_days=settings.logs.retention_days,
                kms_key_id=args.logs_key_arn,
                tags=tags(settings),
            ),
            # protect: the cache's diagnostic trail.
            opts=pulumi.ResourceOptions(parent=self, protect=production),
        )
        group = aws.elasticache.ReplicationGroup(
            f"{name}-redis",
            aws.elasticache.ReplicationGroupArgs(
                replication_group_id=group_id,
                description=f"billing {settings.name} Redis",
                engine="redis",
                engine_version=ENGINE_VERSION,
                node_type=settings.cache.node_type,
                num_cache_clusters=nodes,
                port=REDIS_PORT,
                parameter_group_name=parameters.name,
                subnet_group_name=subnet_group.name,
                security_group_ids=[args.security_group_id],
                at_rest_encryption_enabled=True,
                kms_key_id=args.kms_key_arn,
                transit_encryption_enabled=True,
                auth_token=args.auth_token,
                automatic_failover_enabled=replicated,
                multi_az_enabled=replicated,
                snapshot_retention_limit=SNAPSHOT_RETENTION_DAYS,
                snapshot_window=SNAPSHOT_WINDOW,
                maintenance_window=MAINTENANCE_WINDOW,
                final_snapshot_identifier=f"{group_id}-final" if production else None,
                auto_minor_version_upgrade=True,
                apply_immediately=False,
                log_delivery_configurations=[
                    aws.elasticache.ReplicationGroupLogDeliveryConfigurationArgs(
                        destination=slow_log.name,
                        destination_type="cloudwatch-logs",
                        log_format="json",
                        log_type="slow-log",
                    )
                ],
                tags=tags(settings),
            ),
            # protect: sessions and idempotency keys live here; losing them double-charges.
            opts=pulumi.ResourceOptions(parent=self, protect=production),
        )

        self.replication_group_id = group.replication_group_id
        self.primary_endpoint = group.primary_endpoint_address
        self.port = group.port.apply(lambda port: port or REDIS_PORT)
        self.member_ids = member_cluster_ids(group_id, nodes)
        self.register_outputs(
            {
                "replication_group_id": self.replication_group_id,
                "primary_endpoint": self.primary_endpoint,
                "port": self.port,
            }
        )
