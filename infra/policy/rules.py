"""The policy rules: pure functions over a resource view, written once for both runners.

Each rule names the Checkov check and / or AWS Security Hub control it corresponds to. A
resource rule sees one resource; a stack rule sees every resource of the stack (for checks that
pair resources: a bucket and its public access block, a load balancer and its WAF). Property
names are the providers' camelCase inputs, as plan files and pulumi-policy both carry them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.plans.model import UNKNOWN
from infra.plans.stateful import is_replica, is_stateful
from infra.settings import Enforcement, EnvironmentSettings, Tier, tier_of
from infra.tagging import REQUIRED_LABELS, REQUIRED_TAGS

WORLD = frozenset({"0.0.0.0/0", "::/0"})
# Ports the public load balancer may open to the world.
WEB_PORTS = frozenset({80, 443})


@dataclass(frozen=True)
class ResourceView:
    """What a rule sees of one resource: the same from a plan file and from pulumi-policy."""

    urn: str
    type: str
    name: str
    inputs: Mapping[str, Any]
    protect: bool = False
    dependencies: tuple[str, ...] = ()
    custom: bool = True
    # The provider reference (``<urn>::<id>``); the deploy-readiness rules follow it.
    provider: str = ""


@dataclass(frozen=True)
class Context:
    """The environment a stack belongs to, as far as the rules need it."""

    environment: str
    min_log_retention_days: int = 1
    # None: the tier environments/promotion.toml gives the environment (a stack of no
    # environment there is held to the dev tier's rules).
    tier: Tier | None = None

    @property
    def _tier(self) -> Tier:
        return self.tier or tier_of(self.environment) or Tier.DEV

    @property
    def production(self) -> bool:
        return self._tier is Tier.PRODUCTION

    @property
    def hardened(self) -> bool:
        """Data loss or an outage costs more than a redeploy (staging and production tiers)."""
        return self._tier.hardened

    @classmethod
    def of(cls, settings: EnvironmentSettings) -> Context:
        return cls(settings.name, settings.logs.retention_days, settings.tier)


@dataclass(frozen=True)
class Violation:
    urn: str
    message: str


ResourceCheck = Callable[[ResourceView, Context], Iterable[str]]
StackCheck = Callable[[Sequence[ResourceView], Context], Iterable[Violation]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    controls: tuple[str, ...]
    types: tuple[str, ...] = ()
    resource_check: ResourceCheck | None = None
    stack_check: StackCheck | None = None
    enforcement: Enforcement = Enforcement.MANDATORY
    clouds: tuple[str, ...] = field(default=("aws", "gcp"))

    @property
    def label(self) -> str:
        return f"{self.name} ({', '.join(self.controls)})"

    def evaluate(self, resources: Sequence[ResourceView], ctx: Context) -> list[Violation]:
        """Every violation of this rule in a stack."""
        if self.stack_check is not None:
            return list(self.stack_check(resources, ctx))
        assert self.resource_check is not None  # noqa: S101 - the registry sets one of the two
        return [
            Violation(r.urn, message)
            for r in resources
            if r.type in self.types
            for message in self.resource_check(r, ctx)
        ]


RULES: list[Rule] = []


def resource_rule(
    name: str,
    types: Sequence[str],
    controls: Sequence[str],
    description: str,
    enforcement: Enforcement = Enforcement.MANDATORY,
) -> Callable[[ResourceCheck], ResourceCheck]:
    def register(check: ResourceCheck) -> ResourceCheck:
        cloud = types[0].split(":", 1)[0]
        RULES.append(
            Rule(
                name, description, tuple(controls), tuple(types), check, None, enforcement, (cloud,)
            )
        )
        return check

    return register


def stack_rule(
    name: str,
    controls: Sequence[str],
    description: str,
    clouds: Sequence[str],
    enforcement: Enforcement = Enforcement.MANDATORY,
) -> Callable[[StackCheck], StackCheck]:
    def register(check: StackCheck) -> StackCheck:
        RULES.append(
            Rule(name, description, tuple(controls), (), None, check, enforcement, tuple(clouds))
        )
        return check

    return register


def rules_by_name() -> dict[str, Rule]:
    return {rule.name: rule for rule in RULES}


# -- reading inputs --------------------------------------------------------------------------------


def get(inputs: Mapping[str, Any], path: str) -> Any:
    """A nested input by dotted path; a one-element list (a nested block) is looked through."""
    node: Any = inputs
    for part in path.split("."):
        if isinstance(node, list) and len(node) == 1:
            node = node[0]
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _unknown(value: Any) -> bool:
    # A live preview leaves values computed from other new resources unknown.
    return isinstance(value, str) and value == UNKNOWN


def _is_true(inputs: Mapping[str, Any], path: str) -> bool:
    value = get(inputs, path)
    return value is True or _unknown(value)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # A live preview carries every number as a float (protobuf Struct values).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _refers_to(resource: ResourceView, target: ResourceView, *keys: str) -> bool:
    """Whether ``resource`` names ``target``: by dependency, or by an input equal to its name."""
    if target.urn in resource.dependencies:
        return True
    names = {
        v for k in ("name", "bucket", "identifier") if isinstance(v := target.inputs.get(k), str)
    }
    return any(isinstance(v := resource.inputs.get(k), str) and v in names for k in keys)


def of_types(resources: Sequence[ResourceView], *types: str) -> list[ResourceView]:
    return [r for r in resources if r.type in types]


# -- AWS: RDS ------------------------------------------------------------------------------------

RDS = ("aws:rds/instance:Instance",)


@resource_rule(
    "rds-storage-encrypted",
    RDS,
    ("CKV_AWS_16", "AWS Security Hub RDS.3"),
    "RDS storage is encrypted at rest with a KMS key.",
)
def rds_storage_encrypted(r: ResourceView, _: Context) -> Iterator[str]:
    if not _is_true(r.inputs, "storageEncrypted"):
        yield "storageEncrypted is not true"
    elif not r.inputs.get("kmsKeyId"):
        yield "storageEncrypted without kmsKeyId: the AWS-managed key cannot be audited or rotated"


@resource_rule(
    "rds-not-public",
    RDS,
    ("CKV_AWS_17", "AWS Security Hub RDS.2"),
    "RDS instances are not publicly accessible.",
)
def rds_not_public(r: ResourceView, _: Context) -> Iterator[str]:
    if r.inputs.get("publiclyAccessible") is True:
        yield "publiclyAccessible is true"


@resource_rule(
    "rds-multi-az",
    RDS,
    ("CKV_AWS_157", "AWS Security Hub RDS.5"),
    "RDS instances are Multi-AZ in production.",
)
def rds_multi_az(r: ResourceView, ctx: Context) -> Iterator[str]:
    if is_replica(r.type, r.inputs):  # a read replica: backups and HA are its source's
        return
    if ctx.production and not _is_true(r.inputs, "multiAz"):
        yield "multiAz is not true in production"


@resource_rule(
    "rds-backup-retention",
    RDS,
    ("CKV_AWS_133", "AWS Security Hub RDS.11"),
    "RDS backups are retained (7 days or more in staging and production).",
)
def rds_backup_retention(r: ResourceView, ctx: Context) -> Iterator[str]:
    if is_replica(r.type, r.inputs):  # a read replica: backups and HA are its source's
        return
    days = as_int(r.inputs.get("backupRetentionPeriod"))
    floor = 7 if ctx.hardened else 1
    if days is None or days < floor:
        yield f"backupRetentionPeriod is {days}; at least {floor} days in {ctx.environment}"


@resource_rule(
    "rds-deletion-protection",
    RDS,
    ("CKV_AWS_293", "AWS Security Hub RDS.8"),
    "RDS instances have deletion protection in production.",
)
def rds_deletion_protection(r: ResourceView, ctx: Context) -> Iterator[str]:
    if is_replica(r.type, r.inputs):  # a read replica: backups and HA are its source's
        return
    if ctx.production and not _is_true(r.inputs, "deletionProtection"):
        yield "deletionProtection is not true in production"


@stack_rule(
    "rds-encryption-in-transit",
    ("CKV2_AWS_69",),
    "RDS PostgreSQL instances use a parameter group that forces TLS (rds.force_ssl=1).",
    ("aws",),
)
def rds_in_transit(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    groups = of_types(resources, "aws:rds/parameterGroup:ParameterGroup")
    for db in of_types(resources, *RDS):
        if str(db.inputs.get("engine", "postgres")) != "postgres":
            continue
        forced = [
            g
            for g in groups
            if _refers_to(db, g, "parameterGroupName")
            and any(
                str(p.get("name")) == "rds.force_ssl" and str(p.get("value")) == "1"
                for p in as_list(g.inputs.get("parameters"))
                if isinstance(p, Mapping)
            )
        ]
        if not forced:
            yield Violation(db.urn, "no parameter group with rds.force_ssl=1")


# -- AWS: ElastiCache ----------------------------------------------------------------------------

CACHE = ("aws:elasticache/replicationGroup:ReplicationGroup",)


@resource_rule(
    "elasticache-encrypted-at-rest",
    CACHE,
    ("CKV_AWS_29", "AWS Security Hub ElastiCache.4"),
    "ElastiCache replication groups are encrypted at rest.",
)
def cache_at_rest(r: ResourceView, _: Context) -> Iterator[str]:
    if not _is_true(r.inputs, "atRestEncryptionEnabled"):
        yield "atRestEncryptionEnabled is not true"


@resource_rule(
    "elasticache-encrypted-in-transit",
    CACHE,
    ("CKV_AWS_30", "AWS Security Hub ElastiCache.5"),
    "ElastiCache replication groups encrypt traffic in transit.",
)
def cache_in_transit(r: ResourceView, _: Context) -> Iterator[str]:
    if not _is_true(r.inputs, "transitEncryptionEnabled"):
        yield "transitEncryptionEnabled is not true"


@resource_rule(
    "elasticache-failover",
    CACHE,
    ("AWS Security Hub ElastiCache.3",),
    "ElastiCache fails over automatically across zones in production.",
)
def cache_failover(r: ResourceView, ctx: Context) -> Iterator[str]:
    if not ctx.production:
        return
    for key in ("automaticFailoverEnabled", "multiAzEnabled"):
        if not _is_true(r.inputs, key):
            yield f"{key} is not true in production"


@resource_rule(
    "elasticache-snapshots",
    CACHE,
    ("AWS Security Hub ElastiCache.1",),
    "ElastiCache keeps automatic snapshots in staging and production.",
)
def cache_snapshots(r: ResourceView, ctx: Context) -> Iterator[str]:
    days = as_int(r.inputs.get("snapshotRetentionLimit"))
    if ctx.hardened and (days is None or days < 1):
        yield f"snapshotRetentionLimit is {days} in {ctx.environment}"


# -- AWS: load balancer --------------------------------------------------------------------------

LISTENERS = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
BALANCERS = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
# TLS 1.2+ policies with forward secrecy (Elastic Load Balancing's recommended families).
MODERN_TLS_PREFIXES = (
    "ELBSecurityPolicy-TLS13-",
    "ELBSecurityPolicy-FS-1-2",
    "ELBSecurityPolicy-TLS-1-2",
)


def _application(lb: ResourceView) -> bool:
    return str(lb.inputs.get("loadBalancerType", "application")) == "application"


@resource_rule(
    "alb-https-only",
    LISTENERS,
    ("CKV_AWS_2", "AWS Security Hub ELB.1"),
    "Load balancer listeners serve HTTPS; plain HTTP only redirects to HTTPS.",
)
def alb_https_only(r: ResourceView, _: Context) -> Iterator[str]:
    protocol = str(r.inputs.get("protocol", "HTTP"))
    if protocol != "HTTP":
        return
    actions = [a for a in as_list(r.inputs.get("defaultActions")) if isinstance(a, Mapping)]
    redirects = all(
        a.get("type") == "redirect" and get(a, "redirect.protocol") == "HTTPS" for a in actions
    )
    if not actions or not redirects:
        yield "HTTP listener that does not redirect to HTTPS"


@resource_rule(
    "alb-modern-tls",
    LISTENERS,
    ("CKV_AWS_103", "AWS Security Hub ELB.17"),
    "HTTPS listeners use a TLS 1.2+ security policy.",
)
def alb_modern_tls(r: ResourceView, _: Context) -> Iterator[str]:
    if str(r.inputs.get("protocol", "HTTP")) not in ("HTTPS", "TLS"):
        return
    policy = str(r.inputs.get("sslPolicy") or "")
    if not policy.startswith(MODERN_TLS_PREFIXES):
        yield f"sslPolicy {policy or '(provider default)'} allows TLS below 1.2"


@stack_rule(
    "alb-waf",
    ("CKV2_AWS_28",),
    "Internet-facing application load balancers have a WAF web ACL.",
    ("aws",),
)
def alb_waf(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    associations = of_types(resources, "aws:wafv2/webAclAssociation:WebAclAssociation")
    for lb in of_types(resources, *BALANCERS):
        if not _application(lb) or lb.inputs.get("internal") is True:
            continue
        if not any(_refers_to(a, lb, "resourceArn") for a in associations):
            yield Violation(lb.urn, "no aws:wafv2/webAclAssociation for this load balancer")


@resource_rule(
    "alb-drop-invalid-headers",
    BALANCERS,
    ("CKV_AWS_131", "AWS Security Hub ELB.4"),
    "Application load balancers drop invalid HTTP headers.",
    Enforcement.ADVISORY,
)
def alb_drop_invalid_headers(r: ResourceView, _: Context) -> Iterator[str]:
    if _application(r) and not _is_true(r.inputs, "dropInvalidHeaderFields"):
        yield "dropInvalidHeaderFields is not true"


@resource_rule(
    "alb-deletion-protection",
    BALANCERS,
    ("CKV_AWS_150", "AWS Security Hub ELB.6"),
    "Load balancers have deletion protection in production.",
    Enforcement.ADVISORY,
)
def alb_deletion_protection(r: ResourceView, ctx: Context) -> Iterator[str]:
    if ctx.production and not _is_true(r.inputs, "enableDeletionProtection"):
        yield "enableDeletionProtection is not true in production"


# -- AWS: S3 -------------------------------------------------------------------------------------

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")


def _bucket_companions(
    resources: Sequence[ResourceView], *types: str
) -> Iterator[tuple[ResourceView, list[ResourceView]]]:
    companions = of_types(resources, *types)
    for bucket in of_types(resources, *BUCKETS):
        yield bucket, [c for c in companions if _refers_to(c, bucket, "bucket")]


@stack_rule(
    "s3-public-access-blocked",
    ("CKV_AWS_53", "CKV_AWS_54", "CKV_AWS_55", "CKV_AWS_56", "AWS Security Hub S3.8"),
    "Every bucket has a public access block with all four settings on.",
    ("aws",),
)
def s3_public_access_blocked(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    settings = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for bucket, blocks in _bucket_companions(
        resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
    ):
        if not blocks:
            yield Violation(bucket.urn, "no aws:s3/bucketPublicAccessBlock for this bucket")
        for block in blocks:
            off = [k for k in settings if not _is_true(block.inputs, k)]
            if off:
                yield Violation(block.urn, f"not true: {', '.join(off)}")


@stack_rule(
    "s3-versioning",
    ("CKV_AWS_21", "AWS Security Hub S3.14"),
    "Every bucket has versioning enabled.",
    ("aws",),
)
def s3_versioning(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    for bucket, configs in _bucket_companions(
        resources,
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketVersioningV2:BucketVersioningV2",
    ):
        enabled = any(get(c.inputs, "versioningConfiguration.status") == "Enabled" for c in configs)
        if not enabled and not _is_true(bucket.inputs, "versioning.enabled"):
            yield Violation(bucket.urn, "versioning is not enabled")


@stack_rule(
    "s3-encrypted",
    ("CKV_AWS_19", "CKV_AWS_145"),
    "Every bucket has default server-side encryption configured.",
    ("aws",),
)
def s3_encrypted(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    for bucket, configs in _bucket_companions(
        resources,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    ):
        algorithm = [
            get(c.inputs, "rules.applyServerSideEncryptionByDefault.sseAlgorithm") for c in configs
        ]
        inline = get(bucket.inputs, "serverSideEncryptionConfiguration.rule")
        if not any(algorithm) and not inline:
            yield Violation(bucket.urn, "no default server-side encryption configuration")


# -- AWS: KMS, secrets, ECR ------------------------------------------------------------------------


@resource_rule(
    "kms-key-rotation",
    ("aws:kms/key:Key",),
    ("CKV_AWS_7", "AWS Security Hub KMS.4"),
    "Symmetric KMS keys rotate automatically.",
)
def kms_key_rotation(r: ResourceView, _: Context) -> Iterator[str]:
    spec = str(
        r.inputs.get("customerMasterKeySpec") or r.inputs.get("keySpec") or "SYMMETRIC_DEFAULT"
    )
    if spec == "SYMMETRIC_DEFAULT" and not _is_true(r.inputs, "enableKeyRotation"):
        yield "enableKeyRotation is not true"


@resource_rule(
    "secrets-customer-key",
    ("aws:secretsmanager/secret:Secret",),
    ("CKV_AWS_149",),
    "Secrets Manager secrets are encrypted with a customer-managed KMS key.",
    Enforcement.ADVISORY,
)
def secrets_customer_key(r: ResourceView, _: Context) -> Iterator[str]:
    if not r.inputs.get("kmsKeyId"):
        yield "no kmsKeyId: encrypted with the account's default aws/secretsmanager key"


@resource_rule(
    "ecr-scan-on-push",
    ("aws:ecr/repository:Repository",),
    ("CKV_AWS_163",),
    "ECR repositories scan images on push.",
)
def ecr_scan_on_push(r: ResourceView, _: Context) -> Iterator[str]:
    if not _is_true(r.inputs, "imageScanningConfiguration.scanOnPush"):
        yield "imageScanningConfiguration.scanOnPush is not true"


# -- AWS: ECS ------------------------------------------------------------------------------------

# Environment variable names that carry credentials; their values belong in `secrets`.
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "PRIVATE_KEY", "CREDENTIAL", "DSN")


def _containers(r: ResourceView) -> list[Mapping[str, Any]] | None:
    raw = r.inputs.get("containerDefinitions")
    if raw is None or _unknown(raw):
        return []
    decoded = _json(raw)
    if not isinstance(decoded, list):
        return None
    return [c for c in decoded if isinstance(c, Mapping)]


@resource_rule(
    "ecs-no-public-ip",
    ("aws:ecs/service:Service",),
    ("CKV_AWS_333", "AWS Security Hub ECS.2"),
    "ECS services do not assign public IP addresses to tasks.",
)
def ecs_no_public_ip(r: ResourceView, _: Context) -> Iterator[str]:
    if get(r.inputs, "networkConfiguration.assignPublicIp") is True:
        yield "networkConfiguration.assignPublicIp is true"


@resource_rule(
    "ecs-no-privileged",
    ("aws:ecs/taskDefinition:TaskDefinition",),
    ("CKV_AWS_334", "AWS Security Hub ECS.4"),
    "ECS containers do not run privileged.",
)
def ecs_no_privileged(r: ResourceView, _: Context) -> Iterator[str]:
    containers = _containers(r)
    if containers is None:
        yield "containerDefinitions is not a JSON list"
        return
    for c in containers:
        if c.get("privileged") is True:
            yield f"container {c.get('name')} is privileged"


@resource_rule(
    "ecs-secrets-not-in-environment",
    ("aws:ecs/taskDefinition:TaskDefinition",),
    ("AWS Security Hub ECS.8",),
    "Credentials reach containers through `secrets`, never plain `environment`.",
)
def ecs_secrets_not_in_environment(r: ResourceView, _: Context) -> Iterator[str]:
    for c in _containers(r) or []:
        for variable in as_list(c.get("environment")):
            name = str(variable.get("name", "")) if isinstance(variable, Mapping) else ""
            if any(word in name.upper() for word in SECRET_WORDS):
                yield f"container {c.get('name')}: {name} is a plain environment value"


# -- AWS: logs and network -----------------------------------------------------------------------


@resource_rule(
    "log-retention",
    ("aws:cloudwatch/logGroup:LogGroup",),
    ("CKV_AWS_66", "CKV_AWS_338", "AWS Security Hub CloudWatch.16"),
    "Log groups keep logs at least the environment's minimum, and not forever.",
)
def log_retention(r: ResourceView, ctx: Context) -> Iterator[str]:
    days = as_int(r.inputs.get("retentionInDays"))
    if not days:
        yield "no retentionInDays: logs are kept (and billed) forever"
    elif days < ctx.min_log_retention_days:
        yield f"retentionInDays {days} is below {ctx.environment}'s {ctx.min_log_retention_days}"


@resource_rule(
    "log-group-encrypted",
    ("aws:cloudwatch/logGroup:LogGroup",),
    ("CKV_AWS_158",),
    "Log groups are encrypted with a customer-managed KMS key.",
    Enforcement.ADVISORY,
)
def log_group_encrypted(r: ResourceView, _: Context) -> Iterator[str]:
    if not r.inputs.get("kmsKeyId"):
        yield "no kmsKeyId"


@resource_rule(
    "subnet-no-public-ip-on-launch",
    ("aws:ec2/subnet:Subnet",),
    ("CKV_AWS_130", "AWS Security Hub EC2.15"),
    "Subnets do not give instances public IP addresses on launch.",
)
def subnet_no_public_ip(r: ResourceView, _: Context) -> Iterator[str]:
    if r.inputs.get("mapPublicIpOnLaunch") is True:
        yield "mapPublicIpOnLaunch is true"


@stack_rule(
    "vpc-flow-logs", ("CKV2_AWS_11", "AWS Security Hub EC2.6"), "Every VPC has flow logs.", ("aws",)
)
def vpc_flow_logs(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    logs = of_types(resources, "aws:ec2/flowLog:FlowLog")
    for vpc in of_types(resources, "aws:ec2/vpc:Vpc"):
        # The flow log names the VPC by id (provider-assigned), so the dependency is the link.
        if not any(vpc.urn in log.dependencies for log in logs):
            yield Violation(vpc.urn, "no aws:ec2/flowLog for this VPC")


SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


def _world_rules(r: ResourceView) -> Iterator[Mapping[str, Any]]:
    """The ingress entries of a security group (rule) open to any address."""
    if r.type == SECURITY_GROUP:
        entries = [e for e in as_list(r.inputs.get("ingress")) if isinstance(e, Mapping)]
    elif r.type == SG_RULE:
        entries = [r.inputs] if r.inputs.get("type") == "ingress" else []
    else:
        entries = [r.inputs]
    for entry in entries:
        cidrs = {
            *as_list(entry.get("cidrBlocks")),
            *as_list(entry.get("ipv6CidrBlocks")),
            entry.get("cidrIpv4"),
            entry.get("cidrIpv6"),
        }
        if cidrs & WORLD:
            yield entry


def _web_only(entry: Mapping[str, Any]) -> bool:
    low, high = as_int(entry.get("fromPort")), as_int(entry.get("toPort"))
    protocol = str(entry.get("protocol", entry.get("ipProtocol", "tcp"))).lower()
    return protocol in ("tcp", "6") and low == high and low in WEB_PORTS


@stack_rule(
    "sg-no-world-ingress",
    (
        "CKV_AWS_24",
        "CKV_AWS_25",
        "CKV_AWS_260",
        "AWS Security Hub EC2.18",
        "AWS Security Hub EC2.19",
    ),
    "No security group admits 0.0.0.0/0 or ::/0, except the load balancer's 80/443.",
    ("aws",),
)
def sg_no_world_ingress(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    groups = of_types(resources, SECURITY_GROUP)
    balancers = of_types(resources, *BALANCERS)
    lb_group_ids = {str(g) for lb in balancers for g in as_list(lb.inputs.get("securityGroups"))}
    lb_groups = {g.urn for g in groups if any(g.urn in lb.dependencies for lb in balancers)}
    for r in of_types(resources, SECURITY_GROUP, SG_RULE, SG_INGRESS):
        for entry in _world_rules(r):
            belongs_to_lb = (
                r.urn in lb_groups
                or str(r.inputs.get("securityGroupId")) in lb_group_ids
                or any(d in lb_groups for d in r.dependencies)
            )
            if not (belongs_to_lb and _web_only(entry)):
                ports = f"{entry.get('fromPort')}-{entry.get('toPort')}"
                yield Violation(r.urn, f"ingress from the whole internet on ports {ports}")


def _provider_defaults(
    resources: Sequence[ResourceView], provider_type: str, key: str
) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for p in of_types(resources, provider_type):
        value = _json(p.inputs.get(key))
        if isinstance(value, Mapping):
            # AWS nests them: defaultTags = {"tags": {...}}; GCP: defaultLabels = {...}.
            inner = value.get("tags", value)
            merged |= dict(inner) if isinstance(inner, Mapping) else {}
    return merged


@stack_rule(
    "aws-required-tags",
    ("CKV_AWS_TAGGING (AWS Config required-tags)",),
    "Taggable AWS resources carry the required tags (own or provider default tags).",
    ("aws",),
)
def aws_required_tags(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    defaults = _provider_defaults(resources, "pulumi:providers:aws", "defaultTags")
    for r in resources:
        if not r.custom or not r.type.startswith("aws:") or "tags" not in r.inputs:
            continue
        own = r.inputs.get("tags")
        tags = defaults | (dict(own) if isinstance(own, Mapping) else {})
        missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
        if missing:
            yield Violation(r.urn, f"missing tags: {', '.join(missing)}")


# -- GCP -----------------------------------------------------------------------------------------

SQL = ("gcp:sql/databaseInstance:DatabaseInstance",)
REDIS = ("gcp:redis/instance:Instance",)
GCS = ("gcp:storage/bucket:Bucket",)


@resource_rule(
    "cloudsql-no-public-ip",
    SQL,
    ("CKV_GCP_60",),
    "Cloud SQL instances have no public IPv4 address.",
)
def cloudsql_no_public_ip(r: ResourceView, _: Context) -> Iterator[str]:
    # Cloud SQL turns a public address on unless ipv4Enabled is explicitly false.
    if get(r.inputs, "settings.ipConfiguration.ipv4Enabled") is not False:
        yield "settings.ipConfiguration.ipv4Enabled is not false"


@resource_rule(
    "cloudsql-no-open-networks",
    SQL,
    ("CKV_GCP_11",),
    "Cloud SQL authorised networks never include 0.0.0.0/0.",
)
def cloudsql_no_open_networks(r: ResourceView, _: Context) -> Iterator[str]:
    for network in as_list(get(r.inputs, "settings.ipConfiguration.authorizedNetworks")):
        if isinstance(network, Mapping) and network.get("value") in WORLD:
            yield f"authorizedNetworks includes {network.get('value')}"


@resource_rule(
    "cloudsql-require-tls", SQL, ("CKV_GCP_6",), "Cloud SQL accepts only encrypted connections."
)
def cloudsql_require_tls(r: ResourceView, _: Context) -> Iterator[str]:
    mode = get(r.inputs, "settings.ipConfiguration.sslMode")
    if mode not in ("ENCRYPTED_ONLY", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"):
        yield f"settings.ipConfiguration.sslMode is {mode}"


@resource_rule(
    "cloudsql-high-availability",
    SQL,
    ("CIS GCP 6.x (seed: HA in production)",),
    "Cloud SQL is regional (HA) in production.",
)
def cloudsql_high_availability(r: ResourceView, ctx: Context) -> Iterator[str]:
    if is_replica(r.type, r.inputs):  # a read replica: backups and HA are its source's
        return
    if ctx.production and get(r.inputs, "settings.availabilityType") != "REGIONAL":
        yield "settings.availabilityType is not REGIONAL in production"


@resource_rule(
    "cloudsql-backups",
    SQL,
    ("CKV_GCP_14",),
    "Cloud SQL backs up daily; production also keeps point-in-time recovery.",
)
def cloudsql_backups(r: ResourceView, ctx: Context) -> Iterator[str]:
    if is_replica(r.type, r.inputs):  # a read replica: backups and HA are its source's
        return
    if not _is_true(r.inputs, "settings.backupConfiguration.enabled"):
        yield "settings.backupConfiguration.enabled is not true"
    elif ctx.production and not _is_true(
        r.inputs, "settings.backupConfiguration.pointInTimeRecoveryEnabled"
    ):
        yield "point-in-time recovery is off in production"


@resource_rule(
    "cloudsql-deletion-protection",
    SQL,
    ("AWS Security Hub RDS.8 (GCP equivalent)",),
    "Cloud SQL keeps deletion protection in production.",
)
def cloudsql_deletion_protection(r: ResourceView, ctx: Context) -> Iterator[str]:
    if is_replica(r.type, r.inputs):  # a read replica: backups and HA are its source's
        return
    # The provider defaults deletionProtection to true: only an explicit false disables it.
    if ctx.production and r.inputs.get("deletionProtection") is False:
        yield "deletionProtection is false in production"


@resource_rule(
    "memorystore-encrypted-in-transit",
    REDIS,
    ("CKV_GCP_97",),
    "Memorystore encrypts traffic in transit.",
)
def memorystore_in_transit(r: ResourceView, _: Context) -> Iterator[str]:
    if r.inputs.get("transitEncryptionMode") != "SERVER_AUTHENTICATION":
        yield f"transitEncryptionMode is {r.inputs.get('transitEncryptionMode')}"


@resource_rule("memorystore-auth", REDIS, ("CKV_GCP_95",), "Memorystore requires AUTH.")
def memorystore_auth(r: ResourceView, _: Context) -> Iterator[str]:
    if not _is_true(r.inputs, "authEnabled"):
        yield "authEnabled is not true"


@resource_rule(
    "memorystore-high-availability",
    REDIS,
    ("AWS Security Hub ElastiCache.3 (GCP equivalent)",),
    "Memorystore is STANDARD_HA in production.",
)
def memorystore_high_availability(r: ResourceView, ctx: Context) -> Iterator[str]:
    if ctx.production and r.inputs.get("tier") != "STANDARD_HA":
        yield f"tier is {r.inputs.get('tier')} in production"


@resource_rule(
    "gcp-kms-rotation",
    ("gcp:kms/cryptoKey:CryptoKey",),
    ("CKV_GCP_43",),
    "Cloud KMS keys rotate at least every 90 days.",
)
def gcp_kms_rotation(r: ResourceView, _: Context) -> Iterator[str]:
    period = str(r.inputs.get("rotationPeriod") or "")
    seconds = as_int(period.removesuffix("s"))
    if seconds is None or seconds > 90 * 86400:
        yield f"rotationPeriod is {period or 'unset'}; at most 7776000s"


@resource_rule(
    "gcs-uniform-access", GCS, ("CKV_GCP_29",), "Storage buckets use uniform bucket-level access."
)
def gcs_uniform_access(r: ResourceView, _: Context) -> Iterator[str]:
    if not _is_true(r.inputs, "uniformBucketLevelAccess"):
        yield "uniformBucketLevelAccess is not true"


@resource_rule(
    "gcs-public-access-prevention",
    GCS,
    ("CKV_GCP_114",),
    "Storage buckets enforce public access prevention.",
)
def gcs_public_access_prevention(r: ResourceView, _: Context) -> Iterator[str]:
    if r.inputs.get("publicAccessPrevention") != "enforced":
        yield "publicAccessPrevention is not enforced"


@resource_rule("gcs-versioning", GCS, ("CKV_GCP_78",), "Storage buckets keep object versions.")
def gcs_versioning(r: ResourceView, _: Context) -> Iterator[str]:
    if not _is_true(r.inputs, "versioning.enabled"):
        yield "versioning.enabled is not true"


@resource_rule(
    "gcp-firewall-no-world-ingress",
    ("gcp:compute/firewall:Firewall",),
    ("CKV_GCP_2", "CKV_GCP_3", "CKV_GCP_106"),
    "Firewall rules admit 0.0.0.0/0 only on 80/443.",
)
def gcp_firewall_no_world(r: ResourceView, _: Context) -> Iterator[str]:
    if str(r.inputs.get("direction", "INGRESS")) != "INGRESS":
        return
    if not set(as_list(r.inputs.get("sourceRanges"))) & WORLD:
        return
    for allow in as_list(r.inputs.get("allows")):
        ports = (
            {str(p) for p in as_list(allow.get("ports"))} if isinstance(allow, Mapping) else set()
        )
        if not ports or not ports <= {str(p) for p in WEB_PORTS}:
            yield f"ingress from the whole internet on {sorted(ports) or 'all ports'}"


@resource_rule(
    "gcp-subnet-flow-logs",
    ("gcp:compute/subnetwork:Subnetwork",),
    ("CKV_GCP_26",),
    "Subnetworks record VPC flow logs.",
)
def gcp_subnet_flow_logs(r: ResourceView, _: Context) -> Iterator[str]:
    if not isinstance(get(r.inputs, "logConfig"), Mapping):
        yield "no logConfig"


@resource_rule(
    "gcp-subnet-private-google-access",
    ("gcp:compute/subnetwork:Subnetwork",),
    ("CKV_GCP_74",),
    "Subnetworks reach Google APIs privately.",
)
def gcp_subnet_private_access(r: ResourceView, _: Context) -> Iterator[str]:
    if not _is_true(r.inputs, "privateIpGoogleAccess"):
        yield "privateIpGoogleAccess is not true"


@resource_rule(
    "gcp-modern-tls",
    ("gcp:compute/sSLPolicy:SSLPolicy",),
    ("CIS GCP 3.9",),
    "Load balancer SSL policies require TLS 1.2 with a MODERN or RESTRICTED profile.",
)
def gcp_modern_tls(r: ResourceView, _: Context) -> Iterator[str]:
    if r.inputs.get("minTlsVersion") != "TLS_1_2":
        yield f"minTlsVersion is {r.inputs.get('minTlsVersion')}"
    if r.inputs.get("profile") not in ("MODERN", "RESTRICTED"):
        yield f"profile is {r.inputs.get('profile')}"


@resource_rule(
    "cloudrun-ingress-via-load-balancer",
    ("gcp:cloudrunv2/service:Service",),
    ("CKV_GCP_102 (seed: traffic through the load balancer)",),
    "Cloud Run takes traffic only through the load balancer or the VPC.",
    Enforcement.ADVISORY,
)
def cloudrun_ingress(r: ResourceView, _: Context) -> Iterator[str]:
    if r.inputs.get("ingress", "INGRESS_TRAFFIC_ALL") == "INGRESS_TRAFFIC_ALL":
        yield "ingress is INGRESS_TRAFFIC_ALL"


@resource_rule(
    "cloudrun-secrets-not-in-environment",
    ("gcp:cloudrunv2/service:Service", "gcp:cloudrunv2/workerPool:WorkerPool"),
    ("AWS Security Hub ECS.8 (GCP equivalent)",),
    "Credentials reach Cloud Run through Secret Manager references, never plain values.",
)
def cloudrun_secrets_not_in_environment(r: ResourceView, _: Context) -> Iterator[str]:
    containers = as_list(get(r.inputs, "template.containers")) or as_list(
        get(r.inputs, "template.template.containers")
    )
    for c in containers:
        for variable in as_list(c.get("envs")) if isinstance(c, Mapping) else []:
            if not isinstance(variable, Mapping) or "value" not in variable:
                continue
            name = str(variable.get("name", ""))
            if any(word in name.upper() for word in SECRET_WORDS):
                yield f"{name} is a plain environment value"


# Resources whose labels are not top-level `labels` (so provider default labels do not reach them).
_LABEL_PATHS = {"gcp:sql/databaseInstance:DatabaseInstance": "settings.userLabels"}


@stack_rule(
    "gcp-required-labels",
    ("CKV_GCP_LABELS (required labels)",),
    "Labelled GCP resources carry the required labels (own or provider default labels).",
    ("gcp",),
)
def gcp_required_labels(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    defaults = _provider_defaults(resources, "pulumi:providers:gcp", "defaultLabels")
    for r in resources:
        if not r.custom or not r.type.startswith("gcp:"):
            continue
        path = _LABEL_PATHS.get(r.type)
        if path is not None:
            own, inherited = get(r.inputs, path), {}
        elif "labels" in r.inputs:
            own, inherited = r.inputs.get("labels"), defaults
        else:
            continue
        labels = inherited | (dict(own) if isinstance(own, Mapping) else {})
        missing = [t for t in REQUIRED_LABELS if not labels.get(t)]
        if missing:
            yield Violation(r.urn, f"missing labels: {', '.join(missing)}")


# -- both clouds ---------------------------------------------------------------------------------


@stack_rule(
    "protect-stateful-in-production",
    ("Pulumi protect (AWS Security Hub RDS.8 intent)",),
    "Every resource that holds data is `protect`ed in production.",
    ("aws", "gcp"),
)
def protect_stateful(resources: Sequence[ResourceView], ctx: Context) -> Iterator[Violation]:
    if not ctx.production:
        return
    for r in resources:
        if r.custom and is_stateful(r.type) and not is_replica(r.type, r.inputs) and not r.protect:
            yield Violation(r.urn, "stateful resource without protect in production")
