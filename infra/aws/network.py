"""AWS network: VPC across the environment's AZs, three subnet tiers, NAT, routes, flow logs."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import EnvironmentSettings, NatGateways
from infra.tagging import tags

# Subnet tiers, in the order their CIDR blocks are carved from the VPC range.
TIERS = ("public", "app", "data")
# AWS APIs the tasks reach through interface endpoints rather than the NAT: image pulls,
# secrets at task start and log delivery keep working (and stay off the internet).
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "secretsmanager", "logs")


def subnet_cidrs(vpc_cidr: str, zones: int) -> dict[str, list[str]]:
    """Carve one block per tier and zone; each tier gets an aligned run of blocks."""
    network = ipaddress.ip_network(vpc_cidr)
    # Eight slots a tier: room for every AZ a region has, so adding one moves no subnet.
    blocks = list(network.subnets(prefixlen_diff=5))
    return {
        tier: [str(blocks[8 * index + zone]) for zone in range(zones)]
        for index, tier in enumerate(TIERS)
    }


def _zone(index: int) -> Callable[[list[str]], str]:
    """Pick one zone name out of the zone list (a closure, so each subnet keeps its index)."""
    return lambda names: names[index]


@dataclass(frozen=True)
class NetworkArgs:
    settings: EnvironmentSettings
    zones: pulumi.Input[list[str]]
    # Key for the flow-log group; None until the security layer provides one.
    log_key_arn: pulumi.Input[str] | None = None


class Network(pulumi.ComponentResource):
    """The VPC and everything that routes traffic in and out of it."""

    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    public_subnet_ids: pulumi.Output[list[str]]
    app_subnet_ids: pulumi.Output[list[str]]
    data_subnet_ids: pulumi.Output[list[str]]
    app_route_table_ids: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Network", name, None, opts)
        settings = args.settings
        assert settings.aws is not None  # noqa: S101 - the program only runs for AWS stacks
        aws_settings = settings.aws
        child = pulumi.ResourceOptions(parent=self)
        zone_count = aws_settings.availability_zones
        zones = pulumi.Output.from_input(args.zones)
        cidrs = subnet_cidrs(aws_settings.vpc_cidr, zone_count)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            aws.ec2.VpcArgs(
                cidr_block=aws_settings.vpc_cidr,
                enable_dns_hostnames=True,
                enable_dns_support=True,
                tags=tags(settings, Name=f"billing-{settings.name}"),
            ),
            opts=child,
        )
        internet_gateway = aws.ec2.InternetGateway(
            f"{name}-igw",
            aws.ec2.InternetGatewayArgs(vpc_id=vpc.id, tags=tags(settings)),
            opts=child,
        )

        subnets: dict[str, list[aws.ec2.Subnet]] = {tier: [] for tier in TIERS}
        for tier in TIERS:
            for zone in range(zone_count):
                subnets[tier].append(
                    aws.ec2.Subnet(
                        f"{name}-{tier}-{zone}",
                        aws.ec2.SubnetArgs(
                            vpc_id=vpc.id,
                            cidr_block=cidrs[tier][zone],
                            availability_zone=zones.apply(_zone(zone)),
                            # Only the load balancer and NAT gateways live in public subnets,
                            # and neither needs an automatic public IP.
                            map_public_ip_on_launch=False,
                            tags=tags(
                                settings, Name=f"billing-{settings.name}-{tier}-{zone}", tier=tier
                            ),
                        ),
                        opts=child,
                    )
                )

        public_routes = aws.ec2.RouteTable(
            f"{name}-public-rt",
            aws.ec2.RouteTableArgs(
                vpc_id=vpc.id,
                routes=[
                    aws.ec2.RouteTableRouteArgs(
                        cidr_block="0.0.0.0/0", gateway_id=internet_gateway.id
                    )
                ],
                tags=tags(settings, tier="public"),
            ),
            opts=child,
        )
        for zone, subnet in enumerate(subnets["public"]):
            aws.ec2.RouteTableAssociation(
                f"{name}-public-rta-{zone}",
                aws.ec2.RouteTableAssociationArgs(
                    subnet_id=subnet.id, route_table_id=public_routes.id
                ),
                opts=child,
            )

        nat_count = zone_count if aws_settings.nat_gateways is NatGateways.PER_AZ else 1
        nat_gateways = []
        for zone in range(nat_count):
            address = aws.ec2.Eip(
                f"{name}-nat-eip-{zone}",
                aws.ec2.EipArgs(domain="vpc", tags=tags(settings)),
                opts=child,
            )
            nat_gateways.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{zone}",
                    aws.ec2.NatGatewayArgs(
                        allocation_id=address.id,
                        subnet_id=subnets["public"][zone].id,
                        tags=tags(settings),
                    ),
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[internet_gateway]),
                )
            )

        # Private tiers route out through the NAT in their zone (or the single NAT).
        private_route_tables: list[aws.ec2.RouteTable] = []
        for zone in range(zone_count):
            table = aws.ec2.RouteTable(
                f"{name}-private-rt-{zone}",
                aws.ec2.RouteTableArgs(
                    vpc_id=vpc.id,
                    routes=[
                        aws.ec2.RouteTableRouteArgs(
                            cidr_block="0.0.0.0/0", nat_gateway_id=nat_gateways[zone % nat_count].id
                        )
                    ],
                    tags=tags(settings, tier="private"),
                ),
                opts=child,
            )
            private_route_tables.append(table)
            for tier in ("app", "data"):
                aws.ec2.RouteTableAssociation(
                    f"{name}-{tier}-rta-{zone}",
                    aws.ec2.RouteTableAssociationArgs(
                        subnet_id=subnets[tier][zone].id, route_table_id=table.id
                    ),
                    opts=child,
                )

        flow_log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            aws.cloudwatch.LogGroupArgs(
                name=f"/billing/{settings.name}/vpc-flow-logs",
                retention_in_days=aws_settings.flow_log_retention_days,
                kms_key_id=args.log_key_arn,
                tags=tags(settings),
            ),
            # protect: flow logs are the audit trail of who talked to what.
            opts=pulumi.ResourceOptions(parent=self, protect=settings.is_production),
        )
        flow_log_role = aws.iam.Role(
            f"{name}-flow-logs-role",
            aws.iam.RoleArgs(
                assume_role_policy=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                                "Action": "sts:AssumeRole",
                            }
                        ],
                    }
                ),
                tags=tags(settings),
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy",
            aws.iam.RolePolicyArgs(
                role=flow_log_role.id,
                # Write access to this one log group only.
                policy=flow_log_group.arn.apply(
                    lambda arn: json.dumps(
                        {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": [
                                        "logs:CreateLogStream",
                                        "logs:PutLogEvents",
                                        "logs:DescribeLogStreams",
                                    ],
                                    "Resource": [arn, f"{arn}:*"],
                                }
                            ],
                        }
                    )
                ),
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            aws.ec2.FlowLogArgs(
                vpc_id=vpc.id,
                traffic_type="ALL",
                log_destination_type="cloud-watch-logs",
                log_destination=flow_log_group.arn,
                iam_role_arn=flow_log_role.arn,
                max_aggregation_interval=60,
                tags=tags(settings),
            ),
            opts=child,
        )

        endpoint_group = aws.ec2.SecurityGroup(
            f"{name}-endpoints-sg",
            aws.ec2.SecurityGroupArgs(
                # A prefix, not a name: a replacement is created before the old group goes.
                name_prefix=f"billing-{settings.name}-endpoints-",
                description="VPC interface endpoints: HTTPS from the app subnets",
                vpc_id=vpc.id,
                ingress=[
                    aws.ec2.SecurityGroupIngressArgs(
                        description="HTTPS from the app subnets",
                        protocol="tcp",
                        from_port=443,
                        to_port=443,
                        cidr_blocks=cidrs["app"],
                    )
                ],
                egress=[],
                tags=tags(settings, Name=f"billing-{settings.name}-endpoints"),
            ),
            opts=child,
        )
        region = aws_settings.region
        # S3 is a gateway endpoint: free, and ECR image layers come from S3.
        aws.ec2.VpcEndpoint(
            f"{name}-endpoint-s3",
            aws.ec2.VpcEndpointArgs(
                vpc_id=vpc.id,
                service_name=f"com.amazonaws.{region}.s3",
                vpc_endpoint_type="Gateway",
                route_table_ids=[t.id for t in private_route_tables],
                tags=tags(settings, Name=f"billing-{settings.name}-s3"),
            ),
            opts=child,
        )
        for service in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"{name}-endpoint-{service.replace('.', '-')}",
                aws.ec2.VpcEndpointArgs(
                    vpc_id=vpc.id,
                    service_name=f"com.amazonaws.{region}.{service}",
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=[s.id for s in subnets["app"]],
                    security_group_ids=[endpoint_group.id],
                    tags=tags(settings, Name=f"billing-{settings.name}-{service}"),
                ),
                opts=child,
            )

        self.vpc_id = vpc.id
        self.vpc_cidr = vpc.cidr_block
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in subnets["public"]])
        self.app_subnet_ids = pulumi.Output.all(*[s.id for s in subnets["app"]])
        self.data_subnet_ids = pulumi.Output.all(*[s.id for s in subnets["data"]])
        self.app_route_table_ids = pulumi.Output.all(*[t.id for t in private_route_tables])
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "vpc_cidr": self.vpc_cidr,
                "public_subnet_ids": self.public_subnet_ids,
                "app_subnet_ids": self.app_subnet_ids,
                "data_subnet_ids": self.data_subnet_ids,
                "app_route_table_ids": self.app_route_table_ids,
            }
        )
