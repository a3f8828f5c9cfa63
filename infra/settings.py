"""Typed loader for environments/: shared defaults, per-environment settings and version pins.

Every environment starts from ``environments/defaults.toml`` and overrides, in
``environments/<env>/settings.toml``, only what differs; ``environments/<env>/pins.toml``
pins versions. Any problem stops with one :class:`SettingsError` naming the file and the key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from enum import StrEnum
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from infra import errors
from infra.errors import InfraError
from infra.loading import describe, key_of, load_toml_model, read_toml

REPO_ROOT = errors.REPO_ROOT
ENVIRONMENTS_DIR = REPO_ROOT / "environments"
SERVICES_DIR = REPO_ROOT / "services"
DEFAULTS_FILE = "defaults.toml"
SETTINGS_FILE = "settings.toml"
PINS_FILE = "pins.toml"
# The promotion order and each environment's tier.
PROMOTION_FILE = "promotion.toml"


class SettingsError(InfraError):
    """A problem in an environment file, named by file and key."""

    file: str  # always named


class Cloud(StrEnum):
    AWS = "aws"
    GCP = "gcp"


class Tier(StrEnum):
    """What an environment is held to; environments/promotion.toml gives each one its tier."""

    DEV = "dev"
    STAGING = "staging"
    PRODUCTION = "production"

    @property
    def hardened(self) -> bool:
        """Stricter policy rules and the destructive-change guard apply."""
        return self is not Tier.DEV


class NatGateways(StrEnum):
    SINGLE = "single"
    PER_AZ = "per_az"


class MemorystoreTier(StrEnum):
    BASIC = "BASIC"
    STANDARD_HA = "STANDARD_HA"


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        msg = f"not a valid CIDR block ({exc})"
        raise ValueError(msg) from None
    if network.version != 4:
        raise ValueError("only IPv4 CIDR blocks are supported")
    return value


_VERSION = r"^\d+\.\d+\.\d+$"
# A container image reference: registry/path:tag, optionally @sha256:digest.
_IMAGE = r"^[a-z0-9.\-]+(:\d+)?(/[a-z0-9._\-]+)+(:[A-Za-z0-9._\-]{1,128})?(@sha256:[0-9a-f]{64})?$"
# The retention periods (days) CloudWatch Logs accepts: the settings loader and the
# deploy-readiness rule aws-log-group both read this one list.
# https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html
CLOUDWATCH_RETENTION_DAYS = frozenset(
    {
        1,
        3,
        5,
        7,
        14,
        30,
        60,
        90,
        120,
        150,
        180,
        365,
        400,
        545,
        731,
        1096,
        1827,
        2192,
        2557,
        2922,
        3288,
        3653,
    }
)
# Fargate's task CPU units and the memory sizes (MiB) each accepts, steps included: the table of
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-cpu-memory-error.html
# (RegisterTaskDefinition answers "No Fargate configuration exists for given values" otherwise).
_GIB = 1024
FARGATE_MEMORY: dict[int, tuple[int, ...]] = {
    256: (512, 1 * _GIB, 2 * _GIB),
    512: tuple(n * _GIB for n in range(1, 5)),
    1024: tuple(n * _GIB for n in range(2, 9)),
    2048: tuple(n * _GIB for n in range(4, 17)),
    4096: tuple(n * _GIB for n in range(8, 31)),
    8192: tuple(n * _GIB for n in range(16, 61, 4)),
    16384: tuple(n * _GIB for n in range(32, 121, 8)),
}
# The range of each row, for messages.
FARGATE_SIZES: dict[int, tuple[int, int]] = {
    cpu: (sizes[0], sizes[-1]) for cpu, sizes in FARGATE_MEMORY.items()
}


def fargate_pair_error(cpu: int, memory: int) -> str | None:
    """Why Fargate refuses ``cpu`` units with ``memory`` MiB, or None when it accepts the pair."""
    sizes = FARGATE_MEMORY.get(cpu)
    if sizes is None:
        return f"{cpu} is not a Fargate CPU size ({sorted(FARGATE_MEMORY)})"
    if memory in sizes:
        return None
    accepted = (
        ", ".join(str(m) for m in sizes)
        if len(sizes) <= 4
        else f"{sizes[0]}-{sizes[-1]} in steps of {sizes[1] - sizes[0]}"
    )
    return f"{memory} MiB does not fit {cpu} CPU units (Fargate accepts {accepted} MiB)"


# Fargate gives a task `cpu` / 1024 vCPUs: "1024 CPU units is the equivalent of 1 vCPU"
# (https://repost.aws/knowledge-center/ecs-cpu-allocation; the table of task-cpu-memory-error.html).
CPU_UNITS_PER_VCPU = 1024


def whole_vcpus(cpu: int) -> int:
    """A task's whole vCPUs, at least one, for its CPU units: what a server may run a process
    on, and what Cloud Run is given for the same units (infra/gcp/compute.py, cpu_limit)."""
    return max(1, cpu // CPU_UNITS_PER_VCPU)


def server_processes(command: list[str]) -> str | None:
    """The value of a command's `--processes=N` or `--processes N`, if it has one."""
    for position, argument in enumerate(command):
        if argument.startswith("--processes="):
            return argument.removeprefix("--processes=")
        if argument == "--processes":
            return command[position + 1] if position + 1 < len(command) else ""
    return None


def server_processes_error(command: list[str], cpu: int) -> str | None:
    """Why a task of ``cpu`` units should not run ``command``'s server processes, or None.

    The count must be a whole number of at least 1, as `python -m services.api` accepts it
    (services/api/__main__.py), or the container would stop at start. And one Python process
    uses at most one vCPU; a second on the same vCPU only takes turns with the first. Measured
    on 2 cores shared with PostgreSQL, Redis and the load generator (README, Benchmark), two API
    processes spent 0.86-1.08 ms of CPU per POST where one spent 0.64-0.77 ms.
    """
    value = server_processes(command)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        return f"--processes must be a whole number of at least 1, not {value!r}"
    processes = int(value)
    vcpus = whole_vcpus(cpu)
    if processes <= vcpus:
        return None
    return (
        f"{processes} server processes on {cpu} CPU units ({cpu / CPU_UNITS_PER_VCPU:g} vCPU): "
        f"run at most one per whole vCPU ({vcpus}), or give the task more CPU"
    )


_HOST = r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$"

Cidr = Annotated[str, AfterValidator(_cidr)]
Version = Annotated[str, Field(pattern=_VERSION)]


def _log_retention(value: int) -> int:
    if value not in CLOUDWATCH_RETENTION_DAYS:
        allowed = ", ".join(str(v) for v in sorted(CLOUDWATCH_RETENTION_DAYS))
        raise ValueError(f"{value} is not a CloudWatch retention period ({allowed})")
    return value


LogRetention = Annotated[int, AfterValidator(_log_retention)]


class _Model(BaseModel):
    # strict: "2" is not an integer and 1 is not a string; extra: an unknown key is an error.
    # Enum fields are Strict(strict=False): TOML has no enums, so their values arrive as strings.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AwsSettings(_Model):
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]
    account_id: Annotated[str, Field(pattern=r"^\d{12}$")]
    allowed_account_ids: Annotated[list[str], Field(min_length=1)]
    availability_zones: Annotated[int, Field(ge=2, le=6)]
    vpc_cidr: Cidr
    nat_gateways: Annotated[NatGateways, Strict(strict=False)]
    flow_log_retention_days: LogRetention
    # The API's host name and the Route 53 public hosted zone it lives in: the stack creates and
    # DNS-validates its own ACM certificate there (no certificate ARN is ever configured).
    domain: Annotated[str, Field(pattern=_HOST)]
    hosted_zone_id: Annotated[str, Field(pattern=r"^Z[A-Z0-9]{1,31}$")]
    # A second region that keeps copies of the database's automated backups (seeds 000-002:
    # cross-region recovery); unset keeps them in the stack's region only.
    backup_region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] | None = None

    @field_validator("backup_region")
    @classmethod
    def _other_region(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value == info.data.get("region"):
            raise ValueError(f"{value} is the stack's own region; name a second region")
        return value

    @field_validator("allowed_account_ids")
    @classmethod
    def _account_allowed(cls, value: list[str], info: ValidationInfo) -> list[str]:
        account = info.data.get("account_id")
        if account is not None and account not in value:
            raise ValueError(f"account_id {account} is not in allowed_account_ids {value}")
        return value


class GcpSettings(_Model):
    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
    allowed_projects: Annotated[list[str], Field(min_length=1)]
    region: Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+\d$")]
    subnet_cidr: Cidr
    private_services_cidr: Cidr
    connector_cidr: Cidr
    # The load balancer's host name; with one set it serves HTTPS with a Google-managed certificate.
    domain: Annotated[str, Field(pattern=_HOST)] | None = None
    # The Cloud DNS managed zone (its name, in this project) that holds ``domain``: the stack
    # writes the load balancer's A record there so the managed certificate can become active.
    dns_zone: Annotated[
        str | None, Field(pattern=r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", validate_default=True)
    ] = None
    # Zones of the region that read replicas spread over, in order.
    zones: list[Annotated[str, Field(pattern=r"^[a-z]+-[a-z]+\d-[a-z]$")]] = []
    # Where Cloud SQL keeps its backups: a region or multi-region other than the instance's
    # own puts the copies out of the region's reach. Unset: Cloud SQL's default location.
    backup_location: Annotated[str, Field(pattern=r"^[a-z]+(-[a-z]+\d)?$")] | None = None

    @field_validator("zones")
    @classmethod
    def _zones_in_region(cls, value: list[str], info: ValidationInfo) -> list[str]:
        region = info.data.get("region")
        for zone in value:
            if region is not None and zone.rsplit("-", 1)[0] != region:
                raise ValueError(f"zone {zone} is not in region {region}")
        return value

    @field_validator("allowed_projects")
    @classmethod
    def _project_allowed(cls, value: list[str], info: ValidationInfo) -> list[str]:
        project = info.data.get("project")
        if project is not None and project not in value:
            raise ValueError(f"project {project} is not in allowed_projects {value}")
        return value

    @field_validator("dns_zone")
    @classmethod
    def _zone_for_domain(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("domain") is not None:
            raise ValueError("a domain needs the Cloud DNS zone that holds it (dns_zone)")
        return value


class StackBackend(_Model):
    """Where one cloud's stacks keep their state, and the key their secrets provider uses."""

    backend_url: str
    secrets_provider: str


def _in_cloud(value: StackBackend | None, backend: str, secrets: str) -> StackBackend | None:
    if value is None:
        return value
    bucket = rf"{backend}://[a-z0-9][a-z0-9._-]{{1,61}}[a-z0-9](\?.*)?"
    if not re.fullmatch(bucket, value.backend_url):
        raise ValueError(
            f"backend_url {value.backend_url!r} must be a {backend}:// bucket: "
            "each cloud keeps its stacks' state in that cloud"
        )
    if not value.secrets_provider.startswith(f"{secrets}://"):
        raise ValueError(
            f"secrets_provider {value.secrets_provider!r} must be a {secrets}:// "
            "key: each cloud's jobs hold only that cloud's credentials"
        )
    return value


class PulumiSettings(_Model):
    """Per cloud: its stacks' backend and secrets provider, both in that cloud."""

    aws: StackBackend | None = None
    gcp: StackBackend | None = None

    @field_validator("aws")
    @classmethod
    def _aws(cls, value: StackBackend | None) -> StackBackend | None:
        return _in_cloud(value, "s3", "awskms")

    @field_validator("gcp")
    @classmethod
    def _gcp(cls, value: StackBackend | None) -> StackBackend | None:
        return _in_cloud(value, "gs", "gcpkms")

    def backend(self, cloud: Cloud) -> StackBackend:
        """The cloud's backend; the loader guarantees one for every cloud an environment lists."""
        found: StackBackend | None = getattr(self, cloud.value)
        if found is None:
            raise ValueError(f"no [pulumi.{cloud.value}] backend")
        return found


class OriginalDatabase(StrEnum):
    """What happens to the instance a restore replaced, one pull request at a time."""

    KEEP = "keep"  # beside the restored one, protected: nothing is lost
    RELEASE = "release"  # protection lifted, so the next change may delete it
    REMOVE = "remove"  # deleted: the destructive step the guard stops


class RestoreSettings(_Model):
    """A restore as a pull request: a new instance beside the live one, from a point in time or
    a snapshot; the services switch to it, the old one stays until a later change removes it."""

    # Names the restored instance (billing-<env>-<id>); a new id is a new restore.
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,11}$")]
    point_in_time: dt.datetime | None = None
    # AWS: an RDS snapshot identifier; GCP: a Cloud SQL backup run ID.
    snapshot: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    backup_id: Annotated[int, Field(ge=1)] | None = None
    # Serve from the restored instance; false restores beside the live one for a check first.
    switch: bool = True
    original: Annotated[OriginalDatabase, Strict(strict=False)] = OriginalDatabase.KEEP

    @field_validator("point_in_time")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a UTC offset, for example 2026-11-29T07:55:00Z")
        return value

    @field_validator("original")
    @classmethod
    def _served_before_removed(
        cls, value: OriginalDatabase, info: ValidationInfo
    ) -> OriginalDatabase:
        if value is not OriginalDatabase.KEEP and info.data.get("switch") is False:
            raise ValueError(f"'{value}' needs switch = true: the services still use the original")
        return value

    @property
    def source(self) -> str:
        return "point in time" if self.point_in_time is not None else "snapshot"

    @property
    def restore_time(self) -> str | None:
        """The point in time as RFC 3339 UTC ("2026-11-29T07:55:00Z"), as both APIs take it."""
        if self.point_in_time is None:
            return None
        return self.point_in_time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DatabaseSettings(_Model):
    engine_version: Annotated[str, Field(pattern=r"^15(\.\d+)?$")]
    instance_class: Annotated[str, Field(pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")]
    allocated_storage_gb: Annotated[int, Field(ge=20, le=65536)]
    max_allocated_storage_gb: Annotated[int, Field(ge=20, le=65536)]
    multi_az: bool
    backup_retention_days: Annotated[int, Field(ge=1, le=35)]
    deletion_protection: bool
    cloud_sql_tier: Annotated[str, Field(pattern=r"^db-(custom-\d+-\d+|[a-z0-9-]+)$")]
    # Read replicas of the serving instance, each in another zone (seeds 002 and 004).
    read_replicas: Annotated[int, Field(ge=0, le=5)] = 0
    restore: RestoreSettings | None = None

    @field_validator("max_allocated_storage_gb")
    @classmethod
    def _storage_bounds(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("allocated_storage_gb")
        if low is not None and low > value:
            raise ValueError(f"allocated_storage_gb {low} is greater than max_allocated_storage_gb")
        return value


class CacheSettings(_Model):
    node_type: Annotated[str, Field(pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$")]
    nodes: Annotated[int, Field(ge=1, le=6)]
    memorystore_tier: Annotated[MemorystoreTier, Strict(strict=False)]
    memorystore_size_gb: Annotated[int, Field(ge=1, le=300)]


class ServiceScaling(_Model):
    min_tasks: Annotated[int, Field(ge=0, le=100)]
    max_tasks: Annotated[int, Field(ge=1, le=100)]
    cpu: int | None = None
    memory: int | None = None
    # Cloud Run's floor when it differs from min_tasks: Cloud Run scales to zero, ECS does not.
    min_instances: Annotated[int, Field(ge=0, le=100)] | None = None

    @property
    def cloud_run_min_instances(self) -> int:
        return self.min_tasks if self.min_instances is None else self.min_instances

    @field_validator("max_tasks")
    @classmethod
    def _task_bounds(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_tasks")
        if low is not None and low > value:
            raise ValueError(f"min_tasks {low} is greater than max_tasks {value}")
        return value

    @field_validator("cpu")
    @classmethod
    def _fargate_cpu(cls, value: int | None) -> int | None:
        if value is not None and value not in FARGATE_MEMORY:
            raise ValueError(f"{value} is not a Fargate CPU size ({sorted(FARGATE_MEMORY)})")
        return value

    @field_validator("min_instances")
    @classmethod
    def _instance_bounds(cls, value: int | None, info: ValidationInfo) -> int | None:
        high = info.data.get("max_tasks")
        if value is not None and high is not None and value > high:
            raise ValueError(f"min_instances {value} is greater than max_tasks {high}")
        return value


class ApiSettings(_Model):
    """How the billing API treats its callers in this environment."""

    # Requests per minute per principal (tenant and token subject) before 429 rate_limited;
    # the API reads it as BILLING_RATE_LIMIT_PER_MINUTE (services/api/manifest.toml).
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=1_000_000)]


class ReleaseStrategy(StrEnum):
    ROLLING = "rolling"
    BLUE_GREEN = "blue_green"


class ReleaseSettings(_Model):
    """How a new image reaches traffic: replaced task by task, or blue/green with a bake time."""

    strategy: ReleaseStrategy = ReleaseStrategy.ROLLING
    # Blue/green: minutes the old (blue) tasks stay ready for an instant rollback after traffic
    # moved to the new ones; alarms firing meanwhile roll the release back.
    bake_minutes: Annotated[int, Field(ge=0, le=1440)] = 0
    # Cloud Run blue/green: the image tag each service's traffic stays on (blue) while the pinned
    # one (green) runs beside it with candidate_percent of the traffic; a later change moves
    # serving to the new tag. Unset: the pinned image takes all the traffic.
    serving: dict[str, Annotated[str, Field(pattern=r"^[A-Za-z0-9._\-]{1,128}$")]] = {}
    candidate_percent: Annotated[int, Field(ge=0, le=100)] = 0

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy_from_str(cls, value: object) -> object:
        if isinstance(value, str) and value in set(ReleaseStrategy):
            return ReleaseStrategy(value)
        return value

    @property
    def blue_green(self) -> bool:
        return self.strategy is ReleaseStrategy.BLUE_GREEN


class LogSettings(_Model):
    retention_days: LogRetention


class AlarmSettings(_Model):
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")]


class FreezeWindow(_Model):
    """A dated change freeze, in UTC."""

    start: dt.datetime
    end: dt.datetime
    reason: Annotated[str, Field(min_length=1)]

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a UTC offset, for example 2026-12-21T00:00:00Z")
        return value

    @field_validator("end")
    @classmethod
    def _ordered(cls, value: dt.datetime, info: ValidationInfo) -> dt.datetime:
        start = info.data.get("start")
        if start is not None and start >= value:
            raise ValueError("end must be after start")
        return value


_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class WeeklyFreeze(_Model):
    """A recurring weekly change freeze, in UTC (for example Friday afternoons)."""

    days: Annotated[list[Annotated[Weekday, Strict(strict=False)]], Field(min_length=1)]
    start: Annotated[str, Field(pattern=_HHMM)]
    end: Annotated[str, Field(pattern=_HHMM)]
    reason: Annotated[str, Field(min_length=1)]

    @field_validator("end")
    @classmethod
    def _ordered(cls, value: str, info: ValidationInfo) -> str:
        start = info.data.get("start")
        if start is not None and start >= value:
            raise ValueError("end must be after start (windows do not wrap past midnight)")
        return value


class PythonPins(_Model):
    pulumi: Version
    pulumi_aws: Annotated[str, Field(alias="pulumi-aws", pattern=_VERSION)]
    pulumi_gcp: Annotated[str, Field(alias="pulumi-gcp", pattern=_VERSION)]

    def requirements(self) -> list[str]:
        """Pip requirement strings for these exact versions."""
        return [
            f"pulumi=={self.pulumi}",
            f"pulumi-aws=={self.pulumi_aws}",
            f"pulumi-gcp=={self.pulumi_gcp}",
        ]


class Pins(_Model):
    pulumi_cli: Version
    python: PythonPins
    images: dict[str, Annotated[str, Field(pattern=_IMAGE)]]


class Enforcement(StrEnum):
    MANDATORY = "mandatory"
    ADVISORY = "advisory"


class PolicyExemption(_Model):
    """One rule waived for matching resources, with a reason and an expiry date."""

    rule: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    # A full URN, or a shell-style pattern over resource names ("cache-*").
    resource: Annotated[str, Field(min_length=1)]
    reason: Annotated[str, Field(min_length=1)]
    expires: dt.date

    def waives(self, rule: str, urn: str, name: str | None, today: dt.date) -> bool:
        """Whether this exemption, on ``today``, waives ``rule`` for the resource ``urn``
        (named ``name``, when known): the offline runner and the policy pack both ask this."""
        if self.rule != rule or self.expires < today:
            return False
        return self.resource == urn or (name is not None and fnmatchcase(name, self.resource))


class PolicySettings(_Model):
    """Per-environment enforcement overrides (rule name -> level) and exemptions."""

    enforcement: dict[str, Annotated[Enforcement, Strict(strict=False)]] = {}
    exemptions: list[PolicyExemption] = []


class Promotion(_Model):
    """environments/promotion.toml: the promotion order and each environment's tier."""

    order: Annotated[list[str], Field(min_length=1)]
    tier: dict[str, Annotated[Tier, Strict(strict=False)]]

    @field_validator("order")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once")
        return value

    @field_validator("tier")
    @classmethod
    def _tier_for_each(cls, value: dict[str, Tier], info: ValidationInfo) -> dict[str, Tier]:
        missing = [name for name in info.data.get("order", []) if name not in value]
        if missing:
            raise ValueError(f"no tier for {', '.join(missing)}")
        return value

    @property
    def hardened(self) -> list[str]:
        """The environments whose tier is hardened, in promotion order."""
        return [name for name in self.order if self.tier[name].hardened]


class GithubSettings(_Model):
    """The repository's GitHub environment for this environment (bootstrap manages it)."""

    # Teams (slugs in the repository owner's organisation) that must approve each deploy; the
    # one who started the deploy cannot approve it.
    reviewers: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]] = []


class EnvironmentSettings(_Model):
    """Everything that differs between environments, after defaults are applied."""

    name: str
    tier: Tier
    clouds: Annotated[list[Annotated[Cloud, Strict(strict=False)]], Field(min_length=1)]
    branch: Annotated[str, Field(pattern=r"^[A-Za-z0-9._/\-]+$")]
    cost_centre: str
    repository: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+$")]
    aws: AwsSettings | None = None
    gcp: GcpSettings | None = None
    pulumi: PulumiSettings
    database: DatabaseSettings
    cache: CacheSettings
    services: dict[str, ServiceScaling]
    api: ApiSettings
    logs: LogSettings
    release: ReleaseSettings = ReleaseSettings()
    alarms: AlarmSettings
    freeze: list[FreezeWindow] = []
    freeze_weekly: list[WeeklyFreeze] = []
    policy: PolicySettings = PolicySettings()
    github: GithubSettings = GithubSettings()
    pins: Pins

    @property
    def is_production(self) -> bool:
        return self.tier is Tier.PRODUCTION

    def stacks(self) -> list[tuple[str, Cloud]]:
        return [(self.name, cloud) for cloud in self.clouds]


# -- loading -------------------------------------------------------------------------------------


@cache
def promotion(root: Path = ENVIRONMENTS_DIR) -> Promotion:
    """The promotion order and the tiers, from ``environments/promotion.toml``."""
    return load_toml_model(root / PROMOTION_FILE, Promotion, SettingsError)


def promotion_order(root: Path = ENVIRONMENTS_DIR) -> list[str]:
    return list(promotion(root).order)


def tier_of(name: str, root: Path = ENVIRONMENTS_DIR) -> Tier | None:
    """An environment's tier; None for a name environments/promotion.toml does not list."""
    return promotion(root).tier.get(name)


def known_environments(root: Path = ENVIRONMENTS_DIR) -> list[str]:
    """Environment names: the folders of environments/ with a settings file, in promotion order."""
    found = {p.parent.name for p in root.glob(f"*/{SETTINGS_FILE}")}
    ordered = [e for e in promotion_order(root) if e in found]
    return ordered + sorted(found - set(ordered))


def _merge(
    base: dict[str, Any],
    override: dict[str, Any],
    origin: dict[tuple[str, ...], Path],
    override_file: Path,
    prefix: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Deep-merge ``override`` into ``base``, recording which file each key came from."""
    merged = dict(base)
    for key, value in override.items():
        path = (*prefix, key)
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value, origin, override_file, path)
        else:
            merged[key] = value
            origin[path] = override_file
    return merged


def _record(data: dict[str, Any], file: Path, origin: dict[tuple[str, ...], Path]) -> None:
    def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            origin[(*prefix, key)] = file
            if isinstance(value, dict):
                walk(value, (*prefix, key))

    walk(data, ())


def _first_error(
    exc: ValidationError, origin: dict[tuple[str, ...], Path], fallback: Path
) -> SettingsError:
    """The first error, naming the file that supplied the key (or its nearest parent)."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(str(part) for part in error["loc"])
    file = fallback
    if error["type"] == "missing":
        # A missing key belongs in the environment's own file (or its pins file).
        if loc and loc[0] == "pins":
            file = origin[("pins",)]
    else:
        for length in range(len(loc), 0, -1):
            if loc[:length] in origin:
                file = origin[loc[:length]]
                break
    key = error["loc"][1:] if loc[:1] == ("pins",) else error["loc"]
    return SettingsError(file, key_of(key), describe(error))


def service_names(services_dir: Path = SERVICES_DIR) -> list[str]:
    """The deployable services: folders of services/ with a manifest."""
    return sorted(p.parent.name for p in services_dir.glob("*/manifest.toml"))


def load_environment(  # noqa: PLR0912, PLR0915 - one check after another, each naming its key
    name: str, root: Path = ENVIRONMENTS_DIR, services: list[str] | None = None
) -> EnvironmentSettings:
    """Load and validate one environment, or raise :class:`SettingsError`."""
    known = known_environments(root)
    if name not in known:
        raise SettingsError(
            root, None, f"unknown environment '{name}' (known: {', '.join(known) or 'none'})"
        )
    defaults_file = root / DEFAULTS_FILE
    settings_file = root / name / SETTINGS_FILE
    pins_file = root / name / PINS_FILE
    defaults = read_toml(defaults_file, SettingsError)
    overrides = read_toml(settings_file, SettingsError)
    pins = read_toml(pins_file, SettingsError)

    tier = tier_of(name, root)
    if tier is None:
        raise SettingsError(root / PROMOTION_FILE, f"tier.{name}", "required key is missing")
    for forbidden in ("name", "tier", "pins"):
        for file, data in ((defaults_file, defaults), (settings_file, overrides)):
            if forbidden in data:
                raise SettingsError(file, forbidden, "unknown key")

    origin: dict[tuple[str, ...], Path] = {}
    _record(defaults, defaults_file, origin)
    merged = _merge(defaults, overrides, origin, settings_file)
    _record({"pins": pins}, pins_file, origin)
    origin[("pins",)] = pins_file

    # A cloud the environment does not target needs none of its settings.
    clouds = merged.get("clouds")
    for cloud in Cloud:
        if isinstance(clouds, list) and cloud.value not in clouds:
            merged.pop(cloud.value, None)
            if isinstance(merged.get("pulumi"), dict):
                merged["pulumi"] = {k: v for k, v in merged["pulumi"].items() if k != cloud.value}

    try:
        settings = EnvironmentSettings.model_validate(
            {**merged, "name": name, "tier": tier, "pins": pins}
        )
    except ValidationError as exc:
        raise _first_error(exc, origin, settings_file) from None

    for cloud in settings.clouds:
        if getattr(settings, cloud.value) is None:
            raise SettingsError(
                settings_file, cloud.value, f"clouds lists {cloud} but [{cloud}] is missing"
            )
        if getattr(settings.pulumi, cloud.value) is None:
            missing = f"clouds lists {cloud} but [pulumi.{cloud}] is missing"
            raise SettingsError(settings_file, f"pulumi.{cloud.value}", missing)
    if settings.is_production and not settings.github.reviewers:
        raise SettingsError(
            origin.get(("github",), settings_file),
            "github.reviewers",
            "production deploys need at least one reviewer team",
        )
    if settings.gcp is not None and settings.pulumi.gcp is not None:
        key_project = settings.pulumi.gcp.secrets_provider.removeprefix("gcpkms://").split("/")
        if key_project[:2] != ["projects", settings.gcp.project]:
            raise SettingsError(
                origin.get(("pulumi", "gcp", "secrets_provider"), settings_file),
                "pulumi.gcp.secrets_provider",
                f"the key must be in the environment's project {settings.gcp.project} "
                "(gcpkms://projects/<project>/locations/<l>/keyRings/<r>/cryptoKeys/<k>)",
            )

    _check_restore(settings, origin, settings_file)

    deployable = service_names() if services is None else services
    for service in settings.services:
        if service not in deployable:
            file = origin.get(("services", service), settings_file)
            raise SettingsError(
                file,
                f"services.{service}",
                f"no service '{service}' (services/*/manifest.toml: {deployable})",
            )
    for service in deployable:
        if service not in settings.services:
            raise SettingsError(settings_file, f"services.{service}", "required key is missing")
        if service not in settings.pins.images:
            raise SettingsError(pins_file, f"images.{service}", "missing image pin for the service")
    for image in settings.pins.images:
        if image not in deployable:
            raise SettingsError(pins_file, f"images.{image}", f"no service '{image}' to pin")
    _check_fargate_sizes(settings, origin, settings_file)
    return settings


def _check_restore(
    settings: EnvironmentSettings, origin: dict[tuple[str, ...], Path], fallback: Path
) -> None:
    """A restore names one source each cloud can use: a point in time, or its own snapshot."""
    restore = settings.database.restore
    if restore is None:
        return
    file = origin.get(("database", "restore", "id"), fallback)
    key = "database.restore"
    snapshots = {
        Cloud.AWS: ("snapshot", restore.snapshot),
        Cloud.GCP: ("backup_id", restore.backup_id),
    }
    if restore.point_in_time is not None:
        named = [name for name, value in snapshots.values() if value is not None]
        if named:
            raise SettingsError(
                file,
                f"{key}.point_in_time",
                f"name a point in time or {' and '.join(named)}, not both",
            )
        return
    for cloud in settings.clouds:
        name, value = snapshots[cloud]
        if value is None:
            raise SettingsError(
                file, f"{key}.{name}", f"a restore on {cloud} without point_in_time needs {name}"
            )


def _check_fargate_sizes(
    settings: EnvironmentSettings, origin: dict[tuple[str, ...], Path], settings_file: Path
) -> None:
    """Every service's Fargate pair, a manifest's default filling what settings leave out, and
    its server processes against the CPU the settings give it (load_manifest checks them
    against the manifest's own)."""
    from infra.manifests import load_manifest  # noqa: PLC0415 - manifests import this module

    for service, scaling in sorted(settings.services.items()):
        manifest_file = SERVICES_DIR / service / "manifest.toml"
        manifest = load_manifest(manifest_file) if manifest_file.exists() else None
        cpu = scaling.cpu if scaling.cpu is not None else manifest.cpu if manifest else None
        memory = (
            scaling.memory if scaling.memory is not None else manifest.memory if manifest else None
        )
        if cpu is None or memory is None:
            continue
        if manifest is not None and scaling.cpu is not None:
            error = server_processes_error(manifest.command, cpu)
            if error is not None:
                file = origin.get(("services", service, "cpu"), settings_file)
                raise SettingsError(file, f"services.{service}.cpu", error)
        error = fargate_pair_error(cpu, memory)
        if error is None:
            continue
        # Name the key that made the pair: the override if there is one, else the manifest's.
        if scaling.memory is not None or scaling.cpu is not None:
            key = "memory" if scaling.memory is not None else "cpu"
            file = origin.get(("services", service, key), settings_file)
            raise SettingsError(file, f"services.{service}.{key}", error)
        raise SettingsError(manifest_file, "memory", error)


@cache
def environment(name: str) -> EnvironmentSettings:
    """Cached :func:`load_environment` for the shipped environments/ directory."""
    return load_environment(name)


def validate_name(name: str) -> str:
    """Return ``name`` if it is a plausible environment name, else raise SettingsError."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise SettingsError(ENVIRONMENTS_DIR, None, f"'{name}' is not an environment name")
    return name
