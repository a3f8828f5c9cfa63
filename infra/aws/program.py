"""The AWS stack program. It names no environment: the stack name selects environments/<env>/."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra import stack
from infra.aws.cache import Cache, CacheArgs
from infra.aws.certificate import Certificate, CertificateArgs
from infra.aws.compute import Compute, ComputeArgs
from infra.aws.database import DATABASE_NAME, DATABASE_USERNAME, Database, DatabaseArgs
from infra.aws.dns import Dns, DnsArgs
from infra.aws.edge import Edge, EdgeArgs
from infra.aws.encryption import Keys, KeysArgs
from infra.aws.firewall import SecurityGroups, SecurityGroupsArgs
from infra.aws.frontend import Frontend, FrontendArgs
from infra.aws.network import Network, NetworkArgs, subnet_cidrs
from infra.aws.observability import Observability, ObservabilityArgs
from infra.aws.provider import configured_endpoint, provider_args
from infra.aws.registry import Registry, RegistryArgs
from infra.aws.secrets import Secrets, SecretsArgs
from infra.aws.storage import PrivateBucket, PrivateBucketArgs
from infra.manifests import SecretName, ServiceManifest
from infra.settings import REPO_ROOT, EnvironmentSettings

# The frontend's build output (seed 003's single-page app). The repository holds no frontend yet:
# until one is built there, nothing is uploaded and no CloudFront URL is exported.
SITE_DIR = REPO_ROOT / "frontend" / "dist"
# Backups move to Glacier Instant Retrieval after a month and expire after a year.
BACKUP_ARCHIVE_DAYS = 30
BACKUP_EXPIRE_DAYS = 365


def main() -> None:
    """Declare every AWS resource of the environment named by the stack."""
    settings = stack.settings()
    assert settings.aws is not None  # noqa: S101 - the stack exists only where clouds lists aws
    aws_settings = settings.aws
    services = stack.services()
    provider = aws.Provider("aws", provider_args(settings, configured_endpoint()))
    opts = pulumi.ResourceOptions(providers=[provider])
    invoke = pulumi.InvokeOutputOptions(provider=provider)
    zones = aws.get_availability_zones_output(state="available", opts=invoke).names.apply(
        lambda names: names[: aws_settings.availability_zones]
    )
    cidrs = subnet_cidrs(aws_settings.vpc_cidr, aws_settings.availability_zones)

    keys = Keys("keys", KeysArgs(settings=settings), opts=opts)
    network = Network(
        "network",
        NetworkArgs(settings=settings, zones=zones, log_key_arn=keys.logs_key_arn),
        opts=opts,
    )
    groups = SecurityGroups(
        "firewall",
        SecurityGroupsArgs(
            settings=settings,
            vpc_id=network.vpc_id,
            app_cidrs=cidrs["app"],
            data_cidrs=cidrs["data"],
            services=services,
        ),
        opts=opts,
    )
    secrets = Secrets(
        "secrets", SecretsArgs(settings=settings, kms_key_arn=keys.data_key_arn), opts=opts
    )
    backups = PrivateBucket(
        "backups",
        PrivateBucketArgs(
            settings=settings,
            bucket=f"billing-{settings.name}-backups-{aws_settings.account_id}",
            kms_key_arn=keys.data_key_arn,
            archive_days=BACKUP_ARCHIVE_DAYS,
            expire_days=BACKUP_EXPIRE_DAYS,
            noncurrent_days=90,
            retain=True,
        ),
        opts=opts,
    )
    database = Database(
        "database",
        DatabaseArgs(
            settings=settings,
            subnet_ids=network.data_subnet_ids,
            zones=zones,
            security_group_id=groups.database_id,
            kms_key_arn=keys.data_key_arn,
            logs_key_arn=keys.logs_key_arn,
            password=secrets.database_password,
            credentials_secret_id=secrets.arns[SecretName.DATABASE_PASSWORD],
        ),
        opts=opts,
    )
    cache = Cache(
        "cache",
        CacheArgs(
            settings=settings,
            subnet_ids=network.data_subnet_ids,
            security_group_id=groups.cache_id,
            kms_key_arn=keys.data_key_arn,
            logs_key_arn=keys.logs_key_arn,
            auth_token=secrets.redis_auth_token,
        ),
        opts=opts,
    )
    certificate = Certificate(
        "certificate",
        CertificateArgs(
            settings=settings,
            domain=aws_settings.domain,
            hosted_zone_id=aws_settings.hosted_zone_id,
        ),
        opts=opts,
    )
    edge = Edge(
        "edge",
        EdgeArgs(
            settings=settings,
            vpc_id=network.vpc_id,
            subnet_ids=network.public_subnet_ids,
            security_group_id=groups.alb_id,
            logs_key_arn=keys.logs_key_arn,
            services=services,
            certificate_arn=certificate.certificate_arn,
        ),
        opts=opts,
    )
    registry = Registry(
        "registry", RegistryArgs(settings=settings, kms_key_arn=keys.data_key_arn), opts=opts
    )
    compute = Compute(
        "compute",
        ComputeArgs(
            settings=settings,
            services=services,
            subnet_ids=network.app_subnet_ids,
            security_group_ids=groups.service_ids,
            target_group_arns=edge.target_group_arns,
            listener=edge.https_listener,
            vpc_id=network.vpc_id,
            listener_rules=dict(edge.listener_rules),
            listener_rule_arns=edge.listener_rule_arns,
            alternate_target_group_arns=edge.alternate_target_group_arns,
            secret_arns=secrets.arns,
            data_key_arn=keys.data_key_arn,
            logs_key_arn=keys.logs_key_arn,
            database_host=database.address,
            database_read_host=database.read_address,
            database_name=DATABASE_NAME,
            database_username=DATABASE_USERNAME,
            cache_host=cache.primary_endpoint,
            images=registry.images,
            repository_prefix=registry.repository_prefix,
            registry=registry.cache_rule,
        ),
        opts=opts,
    )
    site = SITE_DIR if (SITE_DIR / "index.html").is_file() else None
    frontend = Frontend("frontend", FrontendArgs(settings=settings, site_dir=site), opts=opts)
    observability = Observability(
        "observability",
        ObservabilityArgs(
            settings=settings,
            logs_key_arn=keys.logs_key_arn,
            alb_arn_suffix=edge.alb_arn_suffix,
            target_group_arn_suffixes=edge.target_group_arn_suffixes,
            database_identifier=database.identifier,
            replica_identifiers=database.replica_identifiers,
            cache_member_ids=cache.member_ids,
            cluster_name=compute.cluster_name,
            service_names=compute.service_names,
        ),
        opts=opts,
    )
    dns = _api_name(settings, edge, services, opts)
    pulumi.export("api_domain", dns.fqdn)
    pulumi.export("api_url", dns.fqdn.apply(lambda name: f"https://{name}"))

    pulumi.export("vpc_id", network.vpc_id)
    pulumi.export("public_subnet_ids", network.public_subnet_ids)
    pulumi.export("app_subnet_ids", network.app_subnet_ids)
    pulumi.export("data_subnet_ids", network.data_subnet_ids)
    pulumi.export("alb_dns_name", edge.alb_dns_name)
    pulumi.export("alb_logs_bucket", edge.logs_bucket_name)
    pulumi.export("rds_endpoint", database.endpoint)
    endpoints = {
        "database_address": database.address,
        "database_read_address": database.read_address,
        "internal_service_names": compute.internal_names,
    }
    for key, value in endpoints.items():
        pulumi.export(key, value)
    pulumi.export("redis_endpoint", cache.primary_endpoint)
    pulumi.export("ecs_cluster_name", compute.cluster_name)
    pulumi.export("service_names", compute.service_names)
    pulumi.export("service_images", registry.images)
    # What a release needs to run the migration task: definition, subnets, security group.
    pulumi.export("migration_task_definition_arn", compute.migration_task_definition_arn)
    pulumi.export("migration_security_group_id", groups.service_ids[_migrating(services)])
    if frontend.serves_content:
        pulumi.export("cloudfront_url", frontend.domain_name.apply(lambda name: f"https://{name}"))
    pulumi.export("frontend_distribution_id", frontend.distribution_id)
    pulumi.export("frontend_bucket_name", frontend.bucket_name)
    pulumi.export("backups_bucket_name", backups.bucket_name)
    pulumi.export("alarm_topic_arns", observability.topic_arns)
    pulumi.export("dashboard_name", observability.dashboard_name)
    pulumi.export("secret_arns", {name.value: arn for name, arn in secrets.arns.items()})


def _api_name(
    settings: EnvironmentSettings,
    edge: Edge,
    services: dict[str, ServiceManifest],
    opts: pulumi.ResourceOptions,
) -> Dns:
    """The API's name in the environment's hosted zone, and a health check on it."""
    assert settings.aws is not None  # noqa: S101 - the stack exists only where clouds lists aws
    public = [m for m in services.values() if m.public and m.health_path is not None]
    return Dns(
        "dns",
        DnsArgs(
            settings=settings,
            domain=settings.aws.domain,
            hosted_zone_id=settings.aws.hosted_zone_id,
            alb_dns_name=edge.alb_dns_name,
            alb_zone_id=edge.alb_zone_id,
            health_path=(public[0].health_path or "/") if public else "/",
        ),
        opts=opts,
    )


def _migrating(services: dict[str, ServiceManifest]) -> str:
    """The service whose image runs the migrations (its security group reaches the database)."""
    return next(name for name, m in sorted(services.items()) if m.migrations is not None)
