"""Monthly on-demand cost per stack from its plan file, line by line.

Sizes come from the plan's inputs (instance classes, storage, node counts, task sizes at the
minimum task count, ...), prices from infra/cost/prices.toml for the stack's region. A resource
type or size the price file does not know is a "not priced" line, never a silent zero.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from infra import markdown
from infra.cost.prices import Prices, RegionPrices, prices
from infra.plans.judge.report import Verdict
from infra.plans.read.model import Plan, Resource

PROVIDERS = {"aws": "pulumi:providers:aws", "gcp": "pulumi:providers:gcp"}


@dataclass(frozen=True)
class LineItem:
    urn: str
    type: str
    name: str
    description: str
    monthly: float | None  # None: not priced

    @property
    def priced(self) -> bool:
        return self.monthly is not None


@dataclass(frozen=True)
class Estimate:
    stack: str
    environment: str
    cloud: str
    region: str
    lines: list[LineItem]

    @property
    def total(self) -> float:
        return sum(line.monthly for line in self.lines if line.monthly is not None)

    @property
    def unpriced(self) -> list[LineItem]:
        return [line for line in self.lines if not line.priced]


@dataclass(frozen=True)
class _Stack:
    """What a pricing function may look up besides its own resource."""

    plan: Plan
    region: RegionPrices
    prices: Prices

    @property
    def hours(self) -> float:
        return self.prices.hours_per_month

    def unit(self, key: str) -> float | None:
        return self.region.unit.get(key)

    def depending_on(self, resource: Resource, type_: str) -> list[Resource]:
        return [r for r in self.plan.of_type(type_) if resource.urn in r.dependencies]

    def dependencies_of(self, resource: Resource, type_: str) -> list[Resource]:
        return [r for r in self.plan.of_type(type_) if r.urn in resource.dependencies]


Pricer = Callable[[Resource, _Stack], tuple[str, float | None]]


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return default
    return default


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _get(inputs: dict[str, Any], *path: str) -> Any:
    node: Any = inputs
    for part in path:
        node = _first(node)
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _times(price: float | None, *factors: float) -> float | None:
    if price is None:
        return None
    total = price
    for factor in factors:
        total *= factor
    return total


# -- AWS -----------------------------------------------------------------------------------------


def _source(r: Resource, s: _Stack, key: str, name_key: str) -> Resource | None:
    """The instance a replica (or a backup copy) reads from, by the name its input gives."""
    name = str(r.inputs.get(key) or "").rsplit(":", 1)[-1]
    found = [x for x in s.plan.of_type(r.type) if x.inputs.get(name_key) == name]
    return found[0] if found else None


def _rds(r: Resource, s: _Stack) -> tuple[str, float | None]:
    klass = str(r.inputs.get("instanceClass"))
    multi = r.inputs.get("multiAz") is True
    source = _source(r, s, "replicateSourceDb", "identifier")
    # A replica's storage is its source's: RDS sizes it so, whatever the replica's inputs say.
    sized = source if source is not None else r
    storage = _number(sized.inputs.get("allocatedStorage"), 20)
    copies = 2 if multi else 1
    hourly = s.region.rds_instance_hour.get(klass)
    gb = s.unit("rds_storage_gb_month")
    az = "Multi-AZ" if multi else "Single-AZ"
    kind = "RDS read replica" if r.inputs.get("replicateSourceDb") else "RDS"
    text = f"{kind} {klass} {az}, {storage:g} GB storage"
    if hourly is None or gb is None:
        return f"{text} (instance class not in the price file)", None
    return text, copies * (hourly * s.hours + storage * gb)


def _backup_copies(r: Resource, s: _Stack) -> tuple[str, float | None]:
    """Automated backups replicated to a second region: stored there, and carried there once."""
    name = str(r.inputs.get("sourceDbInstanceArn") or "").rsplit(":", 1)[-1]
    sources = [
        x for x in s.plan.of_type("aws:rds/instance:Instance") if x.inputs.get("identifier") == name
    ]
    storage = _number(sources[0].inputs.get("allocatedStorage"), 20) if sources else 20.0
    region = r.inputs.get("region") or "another region"
    text = (
        f"RDS backup copies in {region}: {storage:g} GB stored, transferred once a month "
        "(log shipping beyond that not estimated)"
    )
    stored, moved = s.unit("rds_backup_storage_gb_month"), s.unit("inter_region_transfer_gb")
    if stored is None or moved is None:
        return text, None
    return text, storage * (stored + moved)


def _cache(r: Resource, s: _Stack) -> tuple[str, float | None]:
    node = str(r.inputs.get("nodeType"))
    groups = r.inputs.get("numNodeGroups")
    if groups is not None:
        nodes = _number(groups, 1) * (1 + _number(r.inputs.get("replicasPerNodeGroup"), 0))
    else:
        nodes = _number(r.inputs.get("numCacheClusters"), 1)
    hourly = s.region.cache_node_hour.get(node)
    text = f"ElastiCache {nodes:g} x {node}"
    if hourly is None:
        return f"{text} (node type not in the price file)", None
    return text, nodes * hourly * s.hours


def _min_tasks(service: Resource, s: _Stack) -> float:
    targets = s.depending_on(service, "aws:appautoscaling/target:Target")
    name = service.inputs.get("name")
    targets += [
        t
        for t in s.plan.of_type("aws:appautoscaling/target:Target")
        if isinstance(name, str) and str(t.inputs.get("resourceId", "")).endswith(f"/{name}")
    ]
    if targets:
        return _number(targets[0].inputs.get("minCapacity"), 1)
    return _number(service.inputs.get("desiredCount"), 1)


def _fargate(r: Resource, s: _Stack) -> tuple[str, float | None]:
    tasks = _min_tasks(r, s)
    definitions = s.dependencies_of(r, "aws:ecs/taskDefinition:TaskDefinition")
    if not definitions:
        return f"ECS service, {tasks:g} tasks (task definition not in the plan)", None
    cpu = _number(definitions[0].inputs.get("cpu")) / 1024
    memory = _number(definitions[0].inputs.get("memory")) / 1024
    vcpu, gb = s.unit("fargate_vcpu_hour"), s.unit("fargate_gb_hour")
    text = f"Fargate {tasks:g} tasks x ({cpu:g} vCPU, {memory:g} GB) at the minimum count"
    if vcpu is None or gb is None or not cpu or not memory:
        return text, None
    return text, tasks * (cpu * vcpu + memory * gb) * s.hours


def _hourly(unit: str, text: str) -> Pricer:
    def price(_: Resource, s: _Stack) -> tuple[str, float | None]:
        return text, _times(s.unit(unit), s.hours)

    return price


def _monthly(unit: str, text: str) -> Pricer:
    def price(_: Resource, s: _Stack) -> tuple[str, float | None]:
        return text, s.unit(unit)

    return price


def _load_balancer(r: Resource, s: _Stack) -> tuple[str, float | None]:
    if str(r.inputs.get("loadBalancerType", "application")) != "application":
        return f"{r.inputs.get('loadBalancerType')} load balancer", None
    lcu = s.prices.assumptions.alb_lcu
    hour, lcu_hour = s.unit("alb_hour"), s.unit("alb_lcu_hour")
    if hour is None or lcu_hour is None:
        return "Application load balancer", None
    return f"Application load balancer + {lcu:g} LCU", (hour + lcu * lcu_hour) * s.hours


def _log_group(_: Resource, s: _Stack) -> tuple[str, float | None]:
    gb = s.prices.assumptions.log_ingestion_gb_per_group
    return f"Log ingestion, {gb:g} GB assumed", _times(s.unit("log_ingestion_gb"), gb)


def _bucket(_: Resource, s: _Stack) -> tuple[str, float | None]:
    gb = s.prices.assumptions.s3_storage_gb_per_bucket
    return f"S3 Standard, {gb:g} GB assumed", _times(s.unit("s3_storage_gb_month"), gb)


def _cloudfront(_: Resource, s: _Stack) -> tuple[str, float | None]:
    gb = s.prices.assumptions.cloudfront_transfer_gb
    return f"CloudFront, {gb:g} GB out assumed", _times(s.unit("cloudfront_transfer_gb"), gb)


def _registry(unit: str, kind: str) -> Pricer:
    def price(_: Resource, s: _Stack) -> tuple[str, float | None]:
        gb = s.prices.assumptions.registry_storage_gb
        return f"{kind} image storage, {gb:g} GB assumed", _times(s.unit(unit), gb)

    return price


def _web_acl(r: Resource, s: _Stack) -> tuple[str, float | None]:
    rules = len(r.inputs.get("rules") or [])
    acl, rule = s.unit("waf_web_acl_month"), s.unit("waf_rule_month")
    if acl is None or rule is None:
        return f"WAF web ACL, {rules} rules", None
    return f"WAF web ACL, {rules} rules (requests not estimated)", acl + rules * rule


# -- GCP -----------------------------------------------------------------------------------------

_CUSTOM_TIER = re.compile(r"^db-custom-(\d+)-(\d+)$")


def _cloud_sql(r: Resource, s: _Stack) -> tuple[str, float | None]:
    tier = str(_get(r.inputs, "settings", "tier"))
    regional = _get(r.inputs, "settings", "availabilityType") == "REGIONAL"
    copies = 2 if regional else 1
    source = _source(r, s, "masterInstanceName", "name")
    # A replica's disk is at least its primary's.
    sized = source if source is not None else r
    disk = _number(_get(sized.inputs, "settings", "diskSize"), 10)
    disk_type = "hdd" if _get(r.inputs, "settings", "diskType") == "PD_HDD" else "ssd"
    kind = "Cloud SQL read replica" if r.inputs.get("masterInstanceName") else "Cloud SQL"
    text = f"{kind} {tier} {'REGIONAL' if regional else 'ZONAL'}, {disk:g} GB {disk_type}"
    match = _CUSTOM_TIER.match(tier)
    vcpu, memory = s.unit("cloud_sql_vcpu_hour"), s.unit("cloud_sql_memory_gb_hour")
    if match and vcpu is not None and memory is not None:
        hourly: float | None = int(match[1]) * vcpu + int(match[2]) / 1024 * memory
    else:
        hourly = s.region.cloud_sql_shared_core_hour.get(tier)
    storage = s.unit(f"cloud_sql_{disk_type}_gb_month")
    if hourly is None or storage is None:
        return f"{text} (tier not in the price file)", None
    monthly = copies * (hourly * s.hours + disk * storage)
    location = _get(r.inputs, "settings", "backupConfiguration", "location")
    if isinstance(location, str) and location != r.inputs.get("region"):
        # Backups kept in another location: one disk's worth stored there and carried there.
        stored, moved = s.unit("cloud_sql_backup_gb_month"), s.unit("inter_region_transfer_gb")
        if stored is None or moved is None:
            return f"{text}, backups in {location} (not in the price file)", None
        text += f", backups in {location} ({disk:g} GB stored, transferred once a month)"
        monthly += disk * (stored + moved)
    return text, monthly


def _band(gb: float) -> str:
    for limit, band in ((4, "M1"), (10, "M2"), (35, "M3"), (100, "M4")):
        if gb <= limit:
            return band
    return "M5"


def _memorystore(r: Resource, s: _Stack) -> tuple[str, float | None]:
    tier = str(r.inputs.get("tier", "BASIC"))
    gb = _number(r.inputs.get("memorySizeGb"), 1)
    key = f"{tier}-{_band(gb)}"
    text = f"Memorystore {tier} {gb:g} GB ({key})"
    return text, _times(s.region.memorystore_gb_hour.get(key), gb, s.hours)


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Mi|Gi|M|G)$")


def _cpu(value: Any) -> float:
    match = _CPU.match(str(value or "1"))
    if not match:
        return 1.0
    return float(match[1]) / (1000 if match[2] else 1)


def _gib(value: Any) -> float:
    match = _MEMORY.match(str(value or "512Mi"))
    if not match:
        return 0.5
    return float(match[1]) / (1024 if match[2] in ("Mi", "M") else 1)


def _cloud_run(r: Resource, s: _Stack) -> tuple[str, float | None]:
    return _run_instances(r, s, "Cloud Run", worker_pool=False)


def _worker_pool(r: Resource, s: _Stack) -> tuple[str, float | None]:
    return _run_instances(r, s, "Cloud Run worker pool", worker_pool=True)


def _run_instances(
    r: Resource, s: _Stack, kind: str, *, worker_pool: bool
) -> tuple[str, float | None]:
    template = _first(r.inputs.get("template")) or {}
    minimum = _number(_get(template, "scaling", "minInstanceCount"), 0) or _number(
        _get(r.inputs, "scaling", "minInstanceCount"), 0
    )
    container = _first(template.get("containers") if isinstance(template, dict) else None) or {}
    limits = _get(container, "resources", "limits") or {}
    cpu, gib = _cpu(limits.get("cpu")), _gib(limits.get("memory"))
    # Worker pools are always billed per instance; services only when CPU is always allocated.
    always_on = worker_pool or _get(container, "resources", "cpuIdle") is False
    prefix = "cloud_run" if always_on else "cloud_run_idle"
    vcpu, mem = s.unit(f"{prefix}_vcpu_hour"), s.unit(f"{prefix}_memory_gib_hour")
    billing = "instance-based" if always_on else "idle rate"
    text = f"{kind} {minimum:g} minimum instances x ({cpu:g} vCPU, {gib:g} GiB), {billing}"
    if vcpu is None or mem is None:
        return text, None
    return text, minimum * (cpu * vcpu + gib * mem) * s.hours


def _connector(r: Resource, s: _Stack) -> tuple[str, float | None]:
    instances = _number(r.inputs.get("minInstances"), 2)
    text = f"Serverless VPC connector, {instances:g} instances minimum"
    return text, _times(s.unit("vpc_connector_instance_hour"), instances, s.hours)


def _cloud_nat(_: Resource, s: _Stack) -> tuple[str, float | None]:
    vms = s.prices.assumptions.cloud_nat_vms
    text = f"Cloud NAT, {vms:g} VMs assumed (data processed not estimated)"
    return text, _times(s.unit("cloud_nat_vm_hour"), vms, s.hours)


def _armor(r: Resource, s: _Stack) -> tuple[str, float | None]:
    rules = len(r.inputs.get("rules") or [])
    policy, rule = s.unit("armor_policy_month"), s.unit("armor_rule_month")
    if policy is None or rule is None:
        return f"Cloud Armor policy, {rules} rules", None
    return f"Cloud Armor policy, {rules} rules (requests not estimated)", policy + rules * rule


def _gcs(_: Resource, s: _Stack) -> tuple[str, float | None]:
    gb = s.prices.assumptions.gcs_storage_gb_per_bucket
    return f"Cloud Storage Standard, {gb:g} GB assumed", _times(s.unit("gcs_storage_gb_month"), gb)


def _gcp_secret(_: Resource, s: _Stack) -> tuple[str, float | None]:
    versions = s.prices.assumptions.secret_versions
    return f"Secret, {versions:g} active versions", _times(s.unit("secret_version_month"), versions)


PRICERS: dict[str, Pricer] = {
    "aws:rds/instance:Instance": _rds,
    "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication": (
        _backup_copies
    ),
    "aws:elasticache/replicationGroup:ReplicationGroup": _cache,
    "aws:ecs/service:Service": _fargate,
    "aws:ec2/natGateway:NatGateway": _hourly(
        "nat_gateway_hour", "NAT gateway (data not estimated)"
    ),
    "aws:ec2/eip:Eip": _hourly("public_ipv4_hour", "Public IPv4 address"),
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:alb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:kms/key:Key": _monthly("kms_key_month", "KMS key"),
    "aws:secretsmanager/secret:Secret": _monthly("secret_month", "Secrets Manager secret"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": _monthly("alarm_month", "CloudWatch alarm"),
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:s3/bucket:Bucket": _bucket,
    "aws:s3/bucketV2:BucketV2": _bucket,
    "aws:cloudfront/distribution:Distribution": _cloudfront,
    "aws:wafv2/webAcl:WebAcl": _web_acl,
    "aws:route53/zone:Zone": _monthly("route53_zone_month", "Route 53 hosted zone"),
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": _monthly(
        "route53_zone_month", "Cloud Map private namespace (a Route 53 private zone)"
    ),
    "gcp:sql/databaseInstance:DatabaseInstance": _cloud_sql,
    "gcp:redis/instance:Instance": _memorystore,
    "gcp:cloudrunv2/service:Service": _cloud_run,
    "gcp:cloudrunv2/workerPool:WorkerPool": _worker_pool,
    "aws:ecr/repository:Repository": _registry("ecr_storage_gb_month", "ECR"),
    "gcp:artifactregistry/repository:Repository": _registry(
        "artifact_registry_gb_month", "Artifact Registry"
    ),
    "gcp:compute/globalForwardingRule:GlobalForwardingRule": _hourly(
        "forwarding_rule_hour", "Load balancer forwarding rule (data not estimated)"
    ),
    "gcp:vpcaccess/connector:Connector": _connector,
    "gcp:compute/routerNat:RouterNat": _cloud_nat,
    "gcp:kms/cryptoKey:CryptoKey": _monthly("kms_key_version_month", "Cloud KMS key (one version)"),
    "gcp:secretmanager/secret:Secret": _gcp_secret,
    "gcp:compute/securityPolicy:SecurityPolicy": _armor,
    "gcp:storage/bucket:Bucket": _gcs,
}


def region_of(plan: Plan) -> str:
    """The region the plan's provider deploys to ("" when the plan names none)."""
    for provider in plan.of_type(PROVIDERS.get(plan.cloud, "")):
        region = provider.inputs.get("region")
        if isinstance(region, str):
            return region
    return ""


def estimate(plan: Plan, price_file: Prices | None = None) -> Estimate:
    """The monthly estimate of one plan, one line per resource that costs (or may cost) money."""
    table = price_file or prices()
    region = region_of(plan)
    known = table.regions.get(region)
    free = set(table.free.types)
    lines: list[LineItem] = []
    for r in plan.resources:
        if not r.custom or r.type.startswith("pulumi:") or r.type in free:
            continue
        pricer = PRICERS.get(r.type)
        if known is None or known.cloud != plan.cloud:
            description, monthly = f"region {region or '(none)'} not in the price file", None
        elif pricer is None:
            description, monthly = "resource type not in the price file", None
        else:
            description, monthly = pricer(r, _Stack(plan, known, table))
        lines.append(LineItem(r.urn, r.type, r.name, description, monthly))
    return Estimate(plan.key, plan.environment, plan.cloud, region, lines)


# -- report --------------------------------------------------------------------------------------


def money(value: float) -> str:
    return f"${value:,.2f}"


def _signed(value: float) -> str:
    sign = "+" if value >= 0 else "-"
    return f"{sign}{money(abs(value))}"


def console(estimate_: Estimate) -> str:
    """A stack's estimate as text: line items, then the total and what is not priced."""
    lines = [f"{estimate_.stack} ({estimate_.region or 'no region'}):"]
    for line in sorted(
        estimate_.lines, key=lambda x: (x.monthly is None, -(x.monthly or 0), x.name)
    ):
        amount = money(line.monthly) if line.monthly is not None else "not priced"
        lines.append(f"  {amount:>12s}  {line.name}: {line.description}")
    note = f" ({len(estimate_.unpriced)} not priced)" if estimate_.unpriced else ""
    lines.append(f"  {money(estimate_.total):>12s}  total per month{note}")
    return "\n".join(lines)


def by_environment(estimates: Sequence[Estimate]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for e in estimates:
        totals[e.environment] = totals.get(e.environment, 0.0) + e.total
    return totals


def verdict(
    after: Sequence[Estimate], before: Sequence[Estimate] | None = None, against: str | None = None
) -> Verdict:
    """The report section: totals per stack and environment, the delta, and the line items."""
    table = prices()
    old = {e.stack: e for e in before or []}
    header = ["Stack", "Region", "Monthly", "Not priced"]
    if before is not None:
        header.append(f"Change vs `{against}`")
    basis = (
        f"On-demand list prices ({table.currency}, {table.hours_per_month:g} h/month, price file "
        f"as of {table.as_of}); usage beyond the stated assumptions is not included."
    )
    rows: list[list[object]] = []
    for e in after:
        row: list[object] = [e.stack, e.region, money(e.total), len(e.unpriced)]
        if before is not None:
            row.append(_signed(e.total - (old[e.stack].total if e.stack in old else 0.0)))
        rows.append(row)
    lines = [basis, "", *markdown.table(header, rows, right={2, 3, 4})]
    environments = [[env, money(total)] for env, total in by_environment(after).items()]
    lines += ["", *markdown.table(["Environment", "Monthly"], environments, right={1})]
    for e in after:
        lines += ["", f"<details><summary>{e.stack} line items</summary>", "", "```"]
        lines += [console(e), "```", "</details>"]
    return Verdict("Monthly cost", ok=True, markdown="\n".join(lines))


def to_json(estimates: Sequence[Estimate]) -> str:
    return json.dumps(
        [
            {
                "stack": e.stack,
                "region": e.region,
                "total": round(e.total, 2),
                "lines": [
                    {
                        "name": x.name,
                        "type": x.type,
                        "description": x.description,
                        "monthly": None if x.monthly is None else round(x.monthly, 2),
                    }
                    for x in e.lines
                ],
            }
            for e in estimates
        ],
        indent=2,
    )
