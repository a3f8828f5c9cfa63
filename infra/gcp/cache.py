"""Memorystore for Redis 7: private services access, AUTH and in-transit encryption."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from infra.settings import EnvironmentSettings
from infra.tagging import labels

REDIS_VERSION = "REDIS_7_0"


@dataclass(frozen=True)
class CacheArgs:
    settings: EnvironmentSettings
    network_id: pulumi.Input[str]
    private_services_range: pulumi.Input[str]
    # The private services peering must exist before the instance.
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


class Cache(pulumi.ComponentResource):
    """The Redis instance behind sessions, rate limits and the worker's locks."""

    instance_name: pulumi.Output[str]
    host: pulumi.Output[str]
    port: pulumi.Output[int]
    auth_string: pulumi.Output[str]
    # The instance's server CA (PEM): with SERVER_AUTHENTICATION the instance presents a
    # certificate of its own CA, which clients must trust explicitly
    # (https://cloud.google.com/memorystore/docs/redis/in-transit-encryption#certificate_authority).
    server_ca: pulumi.Output[str]

    def __init__(
        self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Cache", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        cache = settings.cache

        instance = gcp.redis.Instance(
            f"{name}-redis",
            gcp.redis.InstanceArgs(
                name=f"billing-{settings.name}-redis",
                redis_version=REDIS_VERSION,
                tier=cache.memorystore_tier.value,
                memory_size_gb=cache.memorystore_size_gb,
                region=settings.gcp.region,
                authorized_network=args.network_id,
                connect_mode="PRIVATE_SERVICE_ACCESS",
                reserved_ip_range=args.private_services_range,
                auth_enabled=True,
                transit_encryption_mode="SERVER_AUTHENTICATION",
                maintenance_policy=gcp.redis.InstanceMaintenancePolicyArgs(
                    weekly_maintenance_windows=[
                        gcp.redis.InstanceMaintenancePolicyWeeklyMaintenanceWindowArgs(
                            day="SUNDAY",
                            start_time=gcp.redis.InstanceMaintenancePolicyWeeklyMaintenanceWindowStartTimeArgs(
                                hours=4, minutes=0
                            ),
                        )
                    ]
                ),
                labels=labels(settings, "cache"),
            ),
            # protect: replacing the instance drops every session and lock it holds.
            opts=pulumi.ResourceOptions(
                parent=self, protect=settings.is_production, depends_on=list(args.depends_on)
            ),
        )

        self.instance_name = instance.name
        self.host = instance.host
        self.port = instance.port
        self.auth_string = pulumi.Output.secret(instance.auth_string)
        self.server_ca = instance.server_ca_certs.apply(
            lambda certs: "".join(c.cert or "" for c in certs or [])
        )
        self.register_outputs(
            {
                "instance_name": self.instance_name,
                "host": self.host,
                "port": self.port,
            }
        )
