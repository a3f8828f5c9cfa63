"""Cloud Run: a service per HTTP manifest, a worker pool per background one, a migrations job."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.manifests import SecretName, ServiceManifest, ValueSource
from infra.settings import EnvironmentSettings, whole_vcpus
from infra.tagging import labels

# The name of the migrations workload (its own service account, database secret only).
MIGRATIONS = "migrate"
# Plain values a migrations run needs: where the database is and which environment it is.
_MIGRATION_SOURCES = frozenset(
    {
        ValueSource.ENVIRONMENT,
        ValueSource.DATABASE_HOST,
        ValueSource.DATABASE_PORT,
        ValueSource.DATABASE_NAME,
        ValueSource.DATABASE_USERNAME,
    }
)
# Requests one instance serves at once before Cloud Run starts another.
REQUEST_CONCURRENCY = 80
# Where workloads that talk to Memorystore find its server CA (a Secret Manager volume).
REDIS_CA_DIR = "/etc/billing/redis-ca"
REDIS_CA_FILE = "ca.pem"
REDIS_CA_PATH = f"{REDIS_CA_DIR}/{REDIS_CA_FILE}"
_REDIS_CA_VOLUME = "redis-server-ca"


def reads_cache(manifest: ServiceManifest) -> bool:
    return ValueSource.CACHE_HOST in manifest.environment.values()


@dataclass(frozen=True)
class EnvEntry:
    """One environment variable: a plain value or a Secret Manager reference."""

    name: str
    value: pulumi.Input[str] | None = None
    secret_id: pulumi.Input[str] | None = None


def cpu_limit(units: int) -> str:
    """Cloud Run vCPUs for Fargate CPU units; below one vCPU Cloud Run caps concurrency at 1."""
    return str(whole_vcpus(units))


def memory_limit(mib: int) -> str:
    # Cloud Run's floor is 512 MiB.
    return f"{max(512, mib)}Mi"


@dataclass(frozen=True)
class WorkloadsArgs:
    settings: EnvironmentSettings
    manifests: Mapping[str, ServiceManifest]
    images: Mapping[str, pulumi.Input[str]]
    service_accounts: Mapping[str, pulumi.Input[str]]
    secret_ids: Mapping[SecretName, pulumi.Input[str]]
    # Plain values by source; service.port is each manifest's own.
    values: Mapping[ValueSource, pulumi.Input[str]]
    connector_id: pulumi.Input[str]
    # The worker pool's Direct VPC egress: worker pools take no Serverless VPC Access connector.
    network_id: pulumi.Input[str]
    subnet_id: pulumi.Input[str]
    redis_ca_id: pulumi.Input[str]
    # Secret versions and accessor grants: a first revision must be able to read its secrets.
    depends_on: list[pulumi.Resource]


class Workloads(pulumi.ComponentResource):
    """Every service of services/ on Cloud Run, sized and wired as its manifest says."""

    service_names: dict[str, pulumi.Output[str]]
    service_urls: dict[str, pulumi.Output[str]]
    migration_job_name: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: WorkloadsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Workloads", name, None, opts)
        self._args = args
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        self.service_names = {}
        self.service_urls = {}
        self.migration_job_name = None
        for service, manifest in sorted(args.manifests.items()):
            if manifest.port is not None:
                run = self._service(name, manifest)
                self.service_names[service] = run.name
                self.service_urls[service] = run.uri
            else:
                pool = self._worker_pool(name, manifest)
                self.service_names[service] = pool.name
            if manifest.migrations is not None:
                self.migration_job_name = self._migrations(name, manifest).name

        self.register_outputs(
            {
                **{f"{service}_name": value for service, value in self.service_names.items()},
                **{f"{service}_url": value for service, value in self.service_urls.items()},
                "migration_job_name": self.migration_job_name,
            }
        )

    def _env(self, manifest: ServiceManifest, *, migrations: bool = False) -> list[EnvEntry]:
        values = dict(self._args.values)
        if manifest.port is not None:
            values[ValueSource.SERVICE_PORT] = str(manifest.port)
        entries = [
            EnvEntry(env_name, value=values[source])
            for env_name, source in sorted(manifest.environment.items())
            if not migrations or source in _MIGRATION_SOURCES
        ]
        entries += [
            EnvEntry(env_name, secret_id=self._args.secret_ids[secret])
            for env_name, secret in sorted(manifest.secrets.items())
            if not migrations or secret is SecretName.DATABASE_PASSWORD
        ]
        return entries

    def _opts(self) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, depends_on=self._args.depends_on)

    def _limits(self, manifest: ServiceManifest) -> dict[str, str]:
        scaling = self._args.settings.services[manifest.name]
        cpu = scaling.cpu if scaling.cpu is not None else manifest.cpu
        memory = scaling.memory if scaling.memory is not None else manifest.memory
        return {"cpu": cpu_limit(cpu), "memory": memory_limit(memory)}

    def _service(self, name: str, manifest: ServiceManifest) -> gcp.cloudrunv2.Service:
        settings = self._args.settings
        assert settings.gcp is not None  # noqa: S101 - checked in __init__
        assert manifest.port is not None  # noqa: S101 - the caller picks HTTP manifests
        scaling = settings.services[manifest.name]
        health = manifest.health_path or "/"
        envs = [
            gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(
                name=entry.name,
                value=entry.value,
                value_source=None
                if entry.secret_id is None
                else gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceArgs(
                    secret_key_ref=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                        secret=entry.secret_id, version="latest"
                    )
                ),
            )
            for entry in self._env(manifest)
        ]
        return gcp.cloudrunv2.Service(
            f"{name}-{manifest.name}",
            gcp.cloudrunv2.ServiceArgs(
                name=f"billing-{settings.name}-{manifest.name}",
                location=settings.gcp.region,
                description=manifest.description,
                # Public services answer only through the load balancer (and its Cloud Armor).
                ingress="INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
                if manifest.public
                else "INGRESS_TRAFFIC_INTERNAL_ONLY",
                # The load balancer does not authenticate callers; ingress is the boundary.
                invoker_iam_disabled=manifest.public,
                deletion_protection=settings.is_production,
                labels=labels(settings, manifest.name),
                traffics=self._traffic(manifest.name),
                template=gcp.cloudrunv2.ServiceTemplateArgs(
                    revision=self._revision_name(manifest.name, self._image_tag(manifest.name))
                    if settings.release.blue_green
                    else None,
                    service_account=self._args.service_accounts[manifest.name],
                    max_instance_request_concurrency=REQUEST_CONCURRENCY,
                    scaling=gcp.cloudrunv2.ServiceTemplateScalingArgs(
                        min_instance_count=scaling.cloud_run_min_instances,
                        max_instance_count=scaling.max_tasks,
                    ),
                    vpc_access=gcp.cloudrunv2.ServiceTemplateVpcAccessArgs(
                        connector=self._args.connector_id, egress="PRIVATE_RANGES_ONLY"
                    ),
                    labels=labels(settings, manifest.name),
                    volumes=[
                        gcp.cloudrunv2.ServiceTemplateVolumeArgs(
                            name=_REDIS_CA_VOLUME,
                            secret=gcp.cloudrunv2.ServiceTemplateVolumeSecretArgs(
                                secret=self._args.redis_ca_id,
                                items=[
                                    gcp.cloudrunv2.ServiceTemplateVolumeSecretItemArgs(
                                        path=REDIS_CA_FILE, version="latest"
                                    )
                                ],
                            ),
                        )
                    ]
                    if reads_cache(manifest)
                    else None,
                    containers=[
                        gcp.cloudrunv2.ServiceTemplateContainerArgs(
                            image=self._args.images[manifest.name],
                            commands=manifest.command,
                            volume_mounts=[
                                gcp.cloudrunv2.ServiceTemplateContainerVolumeMountArgs(
                                    name=_REDIS_CA_VOLUME, mount_path=REDIS_CA_DIR
                                )
                            ]
                            if reads_cache(manifest)
                            else None,
                            ports=gcp.cloudrunv2.ServiceTemplateContainerPortsArgs(
                                container_port=manifest.port
                            ),
                            envs=envs,
                            resources=gcp.cloudrunv2.ServiceTemplateContainerResourcesArgs(
                                limits=self._limits(manifest),
                                cpu_idle=True,
                                startup_cpu_boost=True,
                            ),
                            startup_probe=gcp.cloudrunv2.ServiceTemplateContainerStartupProbeArgs(
                                http_get=gcp.cloudrunv2.ServiceTemplateContainerStartupProbeHttpGetArgs(
                                    path=health
                                ),
                                period_seconds=5,
                                failure_threshold=12,
                            ),
                            liveness_probe=gcp.cloudrunv2.ServiceTemplateContainerLivenessProbeArgs(
                                http_get=gcp.cloudrunv2.ServiceTemplateContainerLivenessProbeHttpGetArgs(
                                    path=health
                                ),
                                period_seconds=30,
                            ),
                        )
                    ],
                ),
            ),
            opts=self._opts(),
        )

    def _image_tag(self, service: str) -> str:
        """The pinned image's tag (a digest-pinned image: its digest's first characters)."""
        image = self._args.settings.pins.images[service]
        reference, _, digest = image.partition("@sha256:")
        tail = reference.rsplit("/", 1)[-1]
        return tail.split(":", 1)[1] if ":" in tail else digest[:12]

    def _revision_name(self, service: str, version: str) -> str:
        """A revision named after its image's tag, so traffic can name it in a later change."""
        slug = re.sub(r"[^a-z0-9-]", "-", version.lower()).strip("-")
        return f"billing-{self._args.settings.name}-{service}-{slug}"[:63].rstrip("-")

    def _traffic(self, service: str) -> list[gcp.cloudrunv2.ServiceTrafficArgs] | None:
        """Blue/green on Cloud Run: traffic by named revision (gcloud run services update-traffic
        --to-revisions; Cloud Run v2 TrafficTarget revision, percent, tag). The tags give each
        side its own URL for checks; rolling environments leave traffic on the latest revision."""
        release = self._args.settings.release
        if not release.blue_green:
            return None
        by_revision = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
        green = self._revision_name(service, self._image_tag(service))
        serving = release.serving.get(service)
        if serving is None or self._revision_name(service, serving) == green:
            return [
                gcp.cloudrunv2.ServiceTrafficArgs(type=by_revision, revision=green, percent=100)
            ]
        return [
            gcp.cloudrunv2.ServiceTrafficArgs(
                type=by_revision,
                revision=self._revision_name(service, serving),
                percent=100 - release.candidate_percent,
                tag="blue",
            ),
            gcp.cloudrunv2.ServiceTrafficArgs(
                type=by_revision, revision=green, percent=release.candidate_percent, tag="green"
            ),
        ]

    def _worker_pool(self, name: str, manifest: ServiceManifest) -> gcp.cloudrunv2.WorkerPool:
        settings = self._args.settings
        assert settings.gcp is not None  # noqa: S101 - checked in __init__
        scaling = settings.services[manifest.name]
        envs = [
            gcp.cloudrunv2.WorkerPoolTemplateContainerEnvArgs(
                name=entry.name,
                value=entry.value,
                value_source=None
                if entry.secret_id is None
                else gcp.cloudrunv2.WorkerPoolTemplateContainerEnvValueSourceArgs(
                    secret_key_ref=gcp.cloudrunv2.WorkerPoolTemplateContainerEnvValueSourceSecretKeyRefArgs(
                        secret=entry.secret_id, version="latest"
                    )
                ),
            )
            for entry in self._env(manifest)
        ]
        # A worker pool, not a service: the worker listens on no port, so a service's startup
        # probe would never pass, and a service bills idle CPU only with "CPU always
        # allocated". Worker pools scale manually (manualInstanceCount; they have no request
        # signal to autoscale on, https://cloud.google.com/run/docs/configuring/workerpools/manual-scaling)
        # and reach the VPC through Direct VPC egress: they take no Serverless VPC Access
        # connector (https://cloud.google.com/run/docs/configuring/vpc-direct-vpc).
        return gcp.cloudrunv2.WorkerPool(
            f"{name}-{manifest.name}",
            gcp.cloudrunv2.WorkerPoolArgs(
                name=f"billing-{settings.name}-{manifest.name}",
                location=settings.gcp.region,
                description=manifest.description,
                launch_stage="BETA",
                deletion_protection=settings.is_production,
                labels=labels(settings, manifest.name),
                scaling=gcp.cloudrunv2.WorkerPoolScalingArgs(
                    scaling_mode="MANUAL",
                    # The worker never scales to zero: renewals are due whether or not anyone calls.
                    manual_instance_count=max(1, scaling.min_tasks),
                ),
                template=gcp.cloudrunv2.WorkerPoolTemplateArgs(
                    service_account=self._args.service_accounts[manifest.name],
                    vpc_access=gcp.cloudrunv2.WorkerPoolTemplateVpcAccessArgs(
                        network_interfaces=[
                            gcp.cloudrunv2.WorkerPoolTemplateVpcAccessNetworkInterfaceArgs(
                                network=self._args.network_id, subnetwork=self._args.subnet_id
                            )
                        ],
                        egress="PRIVATE_RANGES_ONLY",
                    ),
                    labels=labels(settings, manifest.name),
                    volumes=[
                        gcp.cloudrunv2.WorkerPoolTemplateVolumeArgs(
                            name=_REDIS_CA_VOLUME,
                            secret=gcp.cloudrunv2.WorkerPoolTemplateVolumeSecretArgs(
                                secret=self._args.redis_ca_id,
                                items=[
                                    gcp.cloudrunv2.WorkerPoolTemplateVolumeSecretItemArgs(
                                        path=REDIS_CA_FILE, version="latest"
                                    )
                                ],
                            ),
                        )
                    ]
                    if reads_cache(manifest)
                    else None,
                    containers=[
                        gcp.cloudrunv2.WorkerPoolTemplateContainerArgs(
                            image=self._args.images[manifest.name],
                            commands=manifest.command,
                            envs=envs,
                            volume_mounts=[
                                gcp.cloudrunv2.WorkerPoolTemplateContainerVolumeMountArgs(
                                    name=_REDIS_CA_VOLUME, mount_path=REDIS_CA_DIR
                                )
                            ]
                            if reads_cache(manifest)
                            else None,
                            resources=gcp.cloudrunv2.WorkerPoolTemplateContainerResourcesArgs(
                                limits=self._limits(manifest)
                            ),
                        )
                    ],
                ),
            ),
            opts=self._opts(),
        )

    def _migrations(self, name: str, manifest: ServiceManifest) -> gcp.cloudrunv2.Job:
        settings = self._args.settings
        assert settings.gcp is not None  # noqa: S101 - checked in __init__
        assert manifest.migrations is not None  # noqa: S101 - the caller checks
        envs = [
            gcp.cloudrunv2.JobTemplateTemplateContainerEnvArgs(
                name=entry.name,
                value=entry.value,
                value_source=None
                if entry.secret_id is None
                else gcp.cloudrunv2.JobTemplateTemplateContainerEnvValueSourceArgs(
                    secret_key_ref=gcp.cloudrunv2.JobTemplateTemplateContainerEnvValueSourceSecretKeyRefArgs(
                        secret=entry.secret_id, version="latest"
                    )
                ),
            )
            for entry in self._env(manifest, migrations=True)
        ]
        return gcp.cloudrunv2.Job(
            f"{name}-{MIGRATIONS}",
            gcp.cloudrunv2.JobArgs(
                name=f"billing-{settings.name}-{MIGRATIONS}",
                location=settings.gcp.region,
                deletion_protection=settings.is_production,
                labels=labels(settings, manifest.name),
                template=gcp.cloudrunv2.JobTemplateArgs(
                    # One task, never in parallel: two migration runs would race on the schema.
                    task_count=1,
                    parallelism=1,
                    labels=labels(settings, manifest.name),
                    template=gcp.cloudrunv2.JobTemplateTemplateArgs(
                        service_account=self._args.service_accounts[MIGRATIONS],
                        max_retries=0,
                        timeout="1800s",
                        vpc_access=gcp.cloudrunv2.JobTemplateTemplateVpcAccessArgs(
                            connector=self._args.connector_id, egress="PRIVATE_RANGES_ONLY"
                        ),
                        containers=[
                            gcp.cloudrunv2.JobTemplateTemplateContainerArgs(
                                image=self._args.images[manifest.name],
                                commands=manifest.migrations.command,
                                envs=envs,
                                resources=gcp.cloudrunv2.JobTemplateTemplateContainerResourcesArgs(
                                    limits=self._limits(manifest)
                                ),
                            )
                        ],
                    ),
                ),
            ),
            opts=self._opts(),
        )
