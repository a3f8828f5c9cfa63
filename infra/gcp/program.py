"""The GCP stack program. It names no environment: the stack name selects environments/<env>/."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra import stack
from infra.gcp.apis import Apis, ApisArgs
from infra.gcp.cache import Cache, CacheArgs
from infra.gcp.compute import MIGRATIONS, REDIS_CA_PATH, Workloads, WorkloadsArgs, reads_cache
from infra.gcp.database import PORT, Database, DatabaseArgs
from infra.gcp.edge import Edge, EdgeArgs
from infra.gcp.encryption import Encryption, EncryptionArgs, KeyPurpose
from infra.gcp.identities import Identities, IdentitiesArgs, Workload
from infra.gcp.network import Network, NetworkArgs
from infra.gcp.observability import Observability, ObservabilityArgs
from infra.gcp.registry import Registry, RegistryArgs
from infra.gcp.secrets import Secrets, SecretsArgs
from infra.manifests import SecretName, ValueSource
from infra.settings import SERVICES_DIR, SettingsError
from infra.tagging import labels

# The gateway the services charge through (services/billing/config.py, GatewayKind).
PAYMENT_GATEWAY = "stripe"


def main() -> None:
    """Declare every GCP resource of the environment named by the stack."""
    settings = stack.settings()
    assert settings.gcp is not None  # noqa: S101 - the stack exists only where clouds lists gcp
    # The loader checks this too; the program refuses a settings object built any other way.
    if settings.gcp.project not in settings.gcp.allowed_projects:  # pragma: no cover
        raise ValueError(f"project {settings.gcp.project} is not allowed")
    services = stack.services()
    public = sorted(
        (m for m in services.values() if m.public), key=lambda m: (bool(m.paths), m.priority)
    )
    if not public:
        raise SettingsError(SERVICES_DIR, "public", "no public service for the load balancer")
    # The URL map needs a default backend: the public service without paths, or else the routed
    # service with the first priority (on AWS the listener answers 404 there instead).
    front = public[0]

    provider_args = gcp.ProviderArgs(
        project=settings.gcp.project, region=settings.gcp.region, default_labels=labels(settings)
    )
    # The APIs first, through their own provider; every other resource goes through a provider
    # that depends on them, so none is created before its API is enabled (pulumi/pulumi-gcp#675).
    apis_provider = gcp.Provider("gcp-apis", provider_args)
    apis = Apis(
        "apis", ApisArgs(settings=settings), opts=pulumi.ResourceOptions(providers=[apis_provider])
    )
    provider = gcp.Provider(
        "gcp", provider_args, opts=pulumi.ResourceOptions(depends_on=apis.services)
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    encryption = Encryption("encryption", EncryptionArgs(settings=settings), opts=opts)
    network = Network("network", NetworkArgs(settings=settings), opts=opts)
    cache = Cache(
        "cache",
        CacheArgs(
            settings=settings,
            network_id=network.network_id,
            private_services_range=network.private_services_range,
            depends_on=[network.private_services_connection],
        ),
        opts=opts,
    )
    secrets = Secrets(
        "secrets",
        SecretsArgs(
            settings=settings,
            kms_key_id=encryption.key_ids[KeyPurpose.SECRETS],
            redis_auth_string=cache.auth_string,
            redis_server_ca=cache.server_ca,
            depends_on=encryption.grants,
        ),
        opts=opts,
    )
    database = Database(
        "database",
        DatabaseArgs(
            settings=settings,
            network_id=network.network_id,
            kms_key_id=encryption.key_ids[KeyPurpose.DATABASE],
            password=secrets.database_password,
            private_services_range=network.private_services_range,
            depends_on=[network.private_services_connection, *encryption.grants],
        ),
        opts=opts,
    )
    registry = Registry(
        "registry",
        RegistryArgs(
            settings=settings,
            kms_key_id=encryption.key_ids[KeyPurpose.REGISTRY],
            depends_on=encryption.grants,
        ),
        opts=opts,
    )
    workloads = [
        Workload(name=name, secrets=manifest.secret_names, reads_cache=reads_cache(manifest))
        for name, manifest in sorted(services.items())
    ]
    # Migrations run as their own identity: the schema needs the database password, nothing else.
    workloads.append(Workload(name=MIGRATIONS, secrets=[SecretName.DATABASE_PASSWORD]))
    identities = Identities(
        "identities",
        IdentitiesArgs(
            settings=settings,
            workloads=workloads,
            secret_ids=secrets.secret_ids,
            redis_ca_id=secrets.redis_ca_id,
        ),
        opts=opts,
    )
    values: dict[ValueSource, pulumi.Input[str]] = {
        ValueSource.ENVIRONMENT: settings.name,
        ValueSource.DATABASE_HOST: database.private_ip_address,
        ValueSource.DATABASE_READ_HOST: database.read_address,
        ValueSource.DATABASE_PORT: str(PORT),
        ValueSource.DATABASE_NAME: database.database_name,
        ValueSource.DATABASE_USERNAME: database.username,
        ValueSource.CACHE_HOST: cache.host,
        ValueSource.CACHE_PORT: cache.port.apply(str),
        # Memorystore's transit encryption: clients must speak TLS.
        ValueSource.CACHE_TLS: "true",
        ValueSource.CACHE_CA_FILE: REDIS_CA_PATH,
        ValueSource.PAYMENT_GATEWAY: PAYMENT_GATEWAY,
        ValueSource.API_RATE_LIMIT: str(settings.api.rate_limit_per_minute),
    }
    compute = Workloads(
        "workloads",
        WorkloadsArgs(
            settings=settings,
            manifests=services,
            images=registry.images,
            service_accounts=identities.emails,
            secret_ids=secrets.secret_ids,
            values=values,
            connector_id=network.connector_id,
            network_id=network.network_id,
            subnet_id=network.subnet_id,
            redis_ca_id=secrets.redis_ca_id,
            depends_on=[*secrets.versions, *identities.grants, registry.pull_grant],
        ),
        opts=opts,
    )
    edge = Edge(
        "edge",
        EdgeArgs(
            settings=settings,
            service_name=compute.service_names[front.name],
            routes={
                m.name: (compute.service_names[m.name], m.paths)
                for m in public
                if m.paths and m is not front
            },
        ),
        opts=opts,
    )
    domain = settings.gcp.domain
    Observability(
        "observability",
        ObservabilityArgs(
            settings=settings,
            api_service_name=compute.service_names[front.name],
            front_service=front.name,
            database_instance_name=database.instance_name,
            replica_names=database.replica_names,
            redis_instance_name=cache.instance_name,
            health_host=domain if domain is not None else edge.ip_address,
            health_path=front.health_path or "/",
            health_https=domain is not None,
        ),
        opts=opts,
    )

    pulumi.export("network_id", network.network_id)
    pulumi.export("subnet_id", network.subnet_id)
    pulumi.export("load_balancer_ip", edge.ip_address)
    pulumi.export("load_balancer_url", edge.url)
    pulumi.export("cloud_sql_connection_name", database.connection_name)
    pulumi.export("cloud_sql_private_ip", database.private_ip_address)
    pulumi.export("cloud_sql_read_address", database.read_address)
    pulumi.export("redis_host", cache.host)
    pulumi.export("redis_port", cache.port)
    pulumi.export("artifact_repository", registry.repository_id)
    pulumi.export("service_urls", compute.service_urls)
    pulumi.export("migration_job", compute.migration_job_name)
