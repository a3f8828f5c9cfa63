"""AWS DNS: the environment's name for the API, and a health check on it."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import EnvironmentSettings
from infra.tagging import tags


@dataclass(frozen=True)
class DnsArgs:
    settings: EnvironmentSettings
    domain: str
    hosted_zone_id: str
    alb_dns_name: pulumi.Input[str]
    alb_zone_id: pulumi.Input[str]
    health_path: str


class Dns(pulumi.ComponentResource):
    """An alias record to the load balancer and a Route 53 health check of the API."""

    fqdn: pulumi.Output[str]
    health_check_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: DnsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Dns", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        record = aws.route53.Record(
            f"{name}-api",
            aws.route53.RecordArgs(
                zone_id=args.hosted_zone_id,
                name=args.domain,
                type="A",
                aliases=[
                    aws.route53.RecordAliasArgs(
                        name=args.alb_dns_name,
                        zone_id=args.alb_zone_id,
                        evaluate_target_health=True,
                    )
                ],
            ),
            opts=child,
        )
        health_check = aws.route53.HealthCheck(
            f"{name}-health",
            aws.route53.HealthCheckArgs(
                fqdn=args.domain,
                type="HTTPS",
                port=443,
                resource_path=args.health_path,
                request_interval=30,
                failure_threshold=3,
                enable_sni=True,
                measure_latency=True,
                tags=tags(settings, Name=f"billing-{settings.name}-api"),
            ),
            opts=child,
        )
        self.fqdn = record.fqdn
        self.health_check_id = health_check.id
        self.register_outputs({"fqdn": self.fqdn, "health_check_id": self.health_check_id})
