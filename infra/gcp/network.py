"""GCP network: VPC network, subnet, private services access, Serverless VPC Access, Cloud NAT."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.settings import EnvironmentSettings
from infra.tagging import labels


@dataclass(frozen=True)
class NetworkArgs:
    settings: EnvironmentSettings


class Network(pulumi.ComponentResource):
    """A custom-mode VPC network with a private range peered to Google's managed services."""

    network_id: pulumi.Output[str]
    network_self_link: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    private_services_range: pulumi.Output[str]
    connector_id: pulumi.Output[str]
    private_services_connection: gcp.servicenetworking.Connection

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Network", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        gcp_settings = settings.gcp
        child = pulumi.ResourceOptions(parent=self)

        network = gcp.compute.Network(
            f"{name}-vpc",
            gcp.compute.NetworkArgs(
                name=f"billing-{settings.name}",
                auto_create_subnetworks=False,
                routing_mode="REGIONAL",
                # Default internet routes stay: Cloud NAT needs them for egress.
                delete_default_routes_on_create=False,
            ),
            opts=child,
        )
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            gcp.compute.SubnetworkArgs(
                name=f"billing-{settings.name}-{gcp_settings.region}",
                network=network.id,
                region=gcp_settings.region,
                ip_cidr_range=gcp_settings.subnet_cidr,
                private_ip_google_access=True,
                log_config=gcp.compute.SubnetworkLogConfigArgs(
                    aggregation_interval="INTERVAL_1_MIN",
                    flow_sampling=0.5,
                    metadata="INCLUDE_ALL_METADATA",
                ),
            ),
            opts=child,
        )
        services_range = ipaddress.ip_network(gcp_settings.private_services_cidr)
        private_range = gcp.compute.GlobalAddress(
            f"{name}-private-services",
            gcp.compute.GlobalAddressArgs(
                name=f"billing-{settings.name}-private-services",
                purpose="VPC_PEERING",
                address_type="INTERNAL",
                address=str(services_range.network_address),
                prefix_length=services_range.prefixlen,
                network=network.id,
                labels=labels(settings),
            ),
            opts=child,
        )
        connection = gcp.servicenetworking.Connection(
            f"{name}-private-services-connection",
            gcp.servicenetworking.ConnectionArgs(
                network=network.id,
                service="servicenetworking.googleapis.com",
                reserved_peering_ranges=[private_range.name],
            ),
            opts=child,
        )
        # Cloud Run reaches Cloud SQL and Memorystore (private IPs only) through this connector.
        connector = gcp.vpcaccess.Connector(
            f"{name}-connector",
            gcp.vpcaccess.ConnectorArgs(
                # At most 25 characters: "billing-production" would not fit with a suffix.
                name=f"run-{settings.name}"[:25],
                region=gcp_settings.region,
                network=network.name,
                ip_cidr_range=gcp_settings.connector_cidr,
                machine_type="e2-micro",
                # Connector instances scale out with traffic and never scale back in.
                min_instances=2,
                max_instances=10 if settings.is_production else 3,
            ),
            opts=child,
        )
        router = gcp.compute.Router(
            f"{name}-router",
            gcp.compute.RouterArgs(
                name=f"billing-{settings.name}-router",
                network=network.id,
                region=gcp_settings.region,
            ),
            opts=child,
        )
        gcp.compute.RouterNat(
            f"{name}-nat",
            gcp.compute.RouterNatArgs(
                name=f"billing-{settings.name}-nat",
                router=router.name,
                region=gcp_settings.region,
                nat_ip_allocate_option="AUTO_ONLY",
                source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
                log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            ),
            opts=child,
        )

        self.network_id = network.id
        self.network_self_link = network.self_link
        self.subnet_id = subnet.id
        self.private_services_range = private_range.name
        self.connector_id = connector.id
        self.private_services_connection = connection
        self.register_outputs(
            {
                "network_id": self.network_id,
                "network_self_link": self.network_self_link,
                "subnet_id": self.subnet_id,
                "private_services_range": self.private_services_range,
                "connector_id": self.connector_id,
            }
        )
