"""AWS firewalling: least-privilege security groups from the internet to the data stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.manifests import ServiceManifest
from infra.settings import EnvironmentSettings
from infra.tagging import tags

POSTGRES_PORT = 5432
REDIS_PORT = 6379
HTTPS_PORT = 443
HTTP_PORT = 80
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class SecurityGroupsArgs:
    settings: EnvironmentSettings
    vpc_id: pulumi.Input[str]
    # Subnet ranges the groups' egress rules name (no group references, so no cycles).
    app_cidrs: list[str]
    data_cidrs: list[str]
    services: dict[str, ServiceManifest]


class SecurityGroups(pulumi.ComponentResource):
    """Security groups: internet to ALB, ALB to services, services to the data stores."""

    alb_id: pulumi.Output[str]
    service_ids: dict[str, pulumi.Output[str]]
    database_id: pulumi.Output[str]
    cache_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:SecurityGroups", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        public_ports = sorted({m.port for m in args.services.values() if m.public and m.port})

        def group(
            role: str, description: str, service: str = "platform", **rules: Any
        ) -> aws.ec2.SecurityGroup:
            return aws.ec2.SecurityGroup(
                f"{name}-{role}",
                aws.ec2.SecurityGroupArgs(
                    # A prefix, not a name: a replacement is created before the old group goes.
                    name_prefix=f"billing-{settings.name}-{role}-",
                    description=description,
                    vpc_id=args.vpc_id,
                    tags=tags(settings, service, Name=f"billing-{settings.name}-{role}"),
                    **rules,
                ),
                opts=child,
            )

        alb = group(
            "alb",
            "Load balancer: HTTPS from the internet, HTTP only to redirect",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    description="HTTPS from the internet",
                    protocol="tcp",
                    from_port=HTTPS_PORT,
                    to_port=HTTPS_PORT,
                    cidr_blocks=[ANYWHERE],
                ),
                aws.ec2.SecurityGroupIngressArgs(
                    description="HTTP from the internet, answered with a redirect to HTTPS",
                    protocol="tcp",
                    from_port=HTTP_PORT,
                    to_port=HTTP_PORT,
                    cidr_blocks=[ANYWHERE],
                ),
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    # EC2 accepts only ^[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*$ in (rule)
                    # descriptions: no apostrophe (hashicorp/terraform-provider-aws#18874).
                    description=f"To the service port {port} in the app subnets",
                    protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_blocks=args.app_cidrs,
                )
                for port in public_ports
            ],
        )
        service_egress = [
            aws.ec2.SecurityGroupEgressArgs(
                description="HTTPS to AWS APIs (endpoints) and the payment provider",
                protocol="tcp",
                from_port=HTTPS_PORT,
                to_port=HTTPS_PORT,
                cidr_blocks=[ANYWHERE],
            ),
            aws.ec2.SecurityGroupEgressArgs(
                description="PostgreSQL in the data subnets",
                protocol="tcp",
                from_port=POSTGRES_PORT,
                to_port=POSTGRES_PORT,
                cidr_blocks=args.data_cidrs,
            ),
            aws.ec2.SecurityGroupEgressArgs(
                description="Redis in the data subnets",
                protocol="tcp",
                from_port=REDIS_PORT,
                to_port=REDIS_PORT,
                cidr_blocks=args.data_cidrs,
            ),
        ]
        internal_ports = sorted(
            {m.port for m in args.services.values() if m.internal and m.port is not None}
        )
        service_egress += [
            aws.ec2.SecurityGroupEgressArgs(
                description=f"To internal services on port {port} in the app subnets",
                protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_blocks=args.app_cidrs,
            )
            for port in internal_ports
        ]
        services: dict[str, aws.ec2.SecurityGroup] = {}
        for service, manifest in sorted(args.services.items()):
            ingress = (
                [
                    aws.ec2.SecurityGroupIngressArgs(
                        description="From the load balancer only",
                        protocol="tcp",
                        from_port=manifest.port,
                        to_port=manifest.port,
                        security_groups=[alb.id],
                    )
                ]
                if manifest.public and manifest.port is not None
                else [
                    aws.ec2.SecurityGroupIngressArgs(
                        description="From the other services, by its Cloud Map name",
                        protocol="tcp",
                        from_port=manifest.port,
                        to_port=manifest.port,
                        cidr_blocks=args.app_cidrs,
                    )
                ]
                if manifest.internal and manifest.port is not None
                else []
            )
            services[service] = group(
                f"service-{service}",
                f"{service} tasks",
                service,
                ingress=ingress,
                egress=service_egress,
            )
        service_ids = [g.id for g in services.values()]
        # No egress rules: the data stores answer, they never initiate.
        database = group(
            "database",
            "PostgreSQL: only from the services",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    description="PostgreSQL from the services",
                    protocol="tcp",
                    from_port=POSTGRES_PORT,
                    to_port=POSTGRES_PORT,
                    security_groups=service_ids,
                )
            ],
            egress=[],
        )
        cache = group(
            "cache",
            "Redis: only from the services",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    description="Redis from the services",
                    protocol="tcp",
                    from_port=REDIS_PORT,
                    to_port=REDIS_PORT,
                    security_groups=service_ids,
                )
            ],
            egress=[],
        )

        self.alb_id = alb.id
        self.service_ids = {service: g.id for service, g in services.items()}
        self.database_id = database.id
        self.cache_id = cache.id
        self.register_outputs(
            {
                "alb_id": self.alb_id,
                "service_ids": self.service_ids,
                "database_id": self.database_id,
                "cache_id": self.cache_id,
            }
        )
