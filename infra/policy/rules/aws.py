"""The policy rules over AWS resources: RDS, ElastiCache, load balancers, S3, KMS, ECS, logs, VPC.

Each rule names the Checkov check and / or AWS Security Hub control it corresponds to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from infra.policy.rules.common import (
    ANY_VALUE,
    SECRET_WORDS,
    WEB_PORTS,
    WORLD,
    Catalogue,
    Context,
    ResourceView,
    ValueCheck,
    Violation,
    as_int,
    as_list,
    from_json,
    get,
    is_true,
    is_unknown,
    of_types,
    primary,
    provider_defaults,
    refers_to,
)
from infra.settings import Enforcement
from infra.tagging import REQUIRED_TAGS

AWS = Catalogue("aws")

# -- RDS -------------------------------------------------------------------------------------------

RDS = ("aws:rds/instance:Instance",)


@AWS.resource_rule(
    name="rds-storage-encrypted",
    types=RDS,
    controls=("CKV_AWS_16", "AWS Security Hub RDS.3"),
    description="RDS storage is encrypted at rest with a KMS key.",
)
def rds_storage_encrypted(r: ResourceView, _: Context) -> Iterator[str]:
    if not is_true(r.inputs, "storageEncrypted"):
        yield "storageEncrypted is not true"
    elif not r.inputs.get("kmsKeyId"):
        yield "storageEncrypted without kmsKeyId: the AWS-managed key cannot be audited or rotated"


AWS.value_rule(
    name="rds-not-public",
    types=RDS,
    controls=("CKV_AWS_17", "AWS Security Hub RDS.2"),
    description="RDS instances are not publicly accessible.",
    check=ValueCheck(key="publiclyAccessible", forbidden=(True,)),
)


AWS.value_rule(
    name="rds-multi-az",
    types=RDS,
    controls=("CKV_AWS_157", "AWS Security Hub RDS.5"),
    description="RDS instances are Multi-AZ in production.",
    check=ValueCheck(key="multiAz", production_only=True, applies=primary),
)


@AWS.resource_rule(
    name="rds-backup-retention",
    types=RDS,
    controls=("CKV_AWS_133", "AWS Security Hub RDS.11"),
    description="RDS backups are retained (7 days or more in staging and production).",
)
def rds_backup_retention(r: ResourceView, ctx: Context) -> Iterator[str]:
    if not primary(r):
        return
    days = as_int(r.inputs.get("backupRetentionPeriod"))
    floor = 7 if ctx.hardened else 1
    if days is None or days < floor:
        yield f"backupRetentionPeriod is {days}; at least {floor} days in {ctx.environment}"


AWS.value_rule(
    name="rds-deletion-protection",
    types=RDS,
    controls=("CKV_AWS_293", "AWS Security Hub RDS.8"),
    description="RDS instances have deletion protection in production.",
    check=ValueCheck(key="deletionProtection", production_only=True, applies=primary),
)


@AWS.stack_rule(
    name="rds-encryption-in-transit",
    controls=("CKV2_AWS_69",),
    description="RDS PostgreSQL instances use a parameter group that forces TLS (rds.force_ssl=1).",
)
def rds_in_transit(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    groups = of_types(resources, "aws:rds/parameterGroup:ParameterGroup")
    for db in of_types(resources, *RDS):
        if str(db.inputs.get("engine", "postgres")) != "postgres":
            continue
        forced = [
            g
            for g in groups
            if refers_to(db, g, "parameterGroupName")
            and any(
                str(p.get("name")) == "rds.force_ssl" and str(p.get("value")) == "1"
                for p in as_list(g.inputs.get("parameters"))
                if isinstance(p, Mapping)
            )
        ]
        if not forced:
            yield Violation(db.urn, "no parameter group with rds.force_ssl=1")


# -- ElastiCache -----------------------------------------------------------------------------------

CACHE = ("aws:elasticache/replicationGroup:ReplicationGroup",)


AWS.value_rule(
    name="elasticache-encrypted-at-rest",
    types=CACHE,
    controls=("CKV_AWS_29", "AWS Security Hub ElastiCache.4"),
    description="ElastiCache replication groups are encrypted at rest.",
    check=ValueCheck(key="atRestEncryptionEnabled"),
)


AWS.value_rule(
    name="elasticache-encrypted-in-transit",
    types=CACHE,
    controls=("CKV_AWS_30", "AWS Security Hub ElastiCache.5"),
    description="ElastiCache replication groups encrypt traffic in transit.",
    check=ValueCheck(key="transitEncryptionEnabled"),
)


@AWS.resource_rule(
    name="elasticache-failover",
    types=CACHE,
    controls=("AWS Security Hub ElastiCache.3",),
    description="ElastiCache fails over automatically across zones in production.",
)
def cache_failover(r: ResourceView, ctx: Context) -> Iterator[str]:
    if not ctx.production:
        return
    for key in ("automaticFailoverEnabled", "multiAzEnabled"):
        if not is_true(r.inputs, key):
            yield f"{key} is not true in production"


@AWS.resource_rule(
    name="elasticache-snapshots",
    types=CACHE,
    controls=("AWS Security Hub ElastiCache.1",),
    description="ElastiCache keeps automatic snapshots in staging and production.",
)
def cache_snapshots(r: ResourceView, ctx: Context) -> Iterator[str]:
    days = as_int(r.inputs.get("snapshotRetentionLimit"))
    if ctx.hardened and (days is None or days < 1):
        yield f"snapshotRetentionLimit is {days} in {ctx.environment}"


# -- load balancer ---------------------------------------------------------------------------------

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


@AWS.resource_rule(
    name="alb-https-only",
    types=LISTENERS,
    controls=("CKV_AWS_2", "AWS Security Hub ELB.1"),
    description="Load balancer listeners serve HTTPS; plain HTTP only redirects to HTTPS.",
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


@AWS.resource_rule(
    name="alb-modern-tls",
    types=LISTENERS,
    controls=("CKV_AWS_103", "AWS Security Hub ELB.17"),
    description="HTTPS listeners use a TLS 1.2+ security policy.",
)
def alb_modern_tls(r: ResourceView, _: Context) -> Iterator[str]:
    if str(r.inputs.get("protocol", "HTTP")) not in ("HTTPS", "TLS"):
        return
    policy = str(r.inputs.get("sslPolicy") or "")
    if not policy.startswith(MODERN_TLS_PREFIXES):
        yield f"sslPolicy {policy or '(provider default)'} allows TLS below 1.2"


@AWS.stack_rule(
    name="alb-waf",
    controls=("CKV2_AWS_28",),
    description="Internet-facing application load balancers have a WAF web ACL.",
)
def alb_waf(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    associations = of_types(resources, "aws:wafv2/webAclAssociation:WebAclAssociation")
    for lb in of_types(resources, *BALANCERS):
        if not _application(lb) or lb.inputs.get("internal") is True:
            continue
        if not any(refers_to(a, lb, "resourceArn") for a in associations):
            yield Violation(lb.urn, "no aws:wafv2/webAclAssociation for this load balancer")


AWS.value_rule(
    name="alb-drop-invalid-headers",
    types=BALANCERS,
    controls=("CKV_AWS_131", "AWS Security Hub ELB.4"),
    description="Application load balancers drop invalid HTTP headers.",
    check=ValueCheck(key="dropInvalidHeaderFields", applies=_application),
    enforcement=Enforcement.ADVISORY,
)


AWS.value_rule(
    name="alb-deletion-protection",
    types=BALANCERS,
    controls=("CKV_AWS_150", "AWS Security Hub ELB.6"),
    description="Load balancers have deletion protection in production.",
    check=ValueCheck(key="enableDeletionProtection", production_only=True),
    enforcement=Enforcement.ADVISORY,
)


# -- S3 --------------------------------------------------------------------------------------------

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")


def _bucket_companions(
    resources: Sequence[ResourceView], *types: str
) -> Iterator[tuple[ResourceView, list[ResourceView]]]:
    companions = of_types(resources, *types)
    for bucket in of_types(resources, *BUCKETS):
        yield bucket, [c for c in companions if refers_to(c, bucket, "bucket")]


@AWS.stack_rule(
    name="s3-public-access-blocked",
    controls=("CKV_AWS_53", "CKV_AWS_54", "CKV_AWS_55", "CKV_AWS_56", "AWS Security Hub S3.8"),
    description="Every bucket has a public access block with all four settings on.",
)
def s3_public_access_blocked(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    settings = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    for bucket, blocks in _bucket_companions(
        resources, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
    ):
        if not blocks:
            yield Violation(bucket.urn, "no aws:s3/bucketPublicAccessBlock for this bucket")
        for block in blocks:
            off = [k for k in settings if not is_true(block.inputs, k)]
            if off:
                yield Violation(block.urn, f"not true: {', '.join(off)}")


@AWS.stack_rule(
    name="s3-versioning",
    controls=("CKV_AWS_21", "AWS Security Hub S3.14"),
    description="Every bucket has versioning enabled.",
)
def s3_versioning(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    for bucket, configs in _bucket_companions(
        resources,
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketVersioningV2:BucketVersioningV2",
    ):
        enabled = any(get(c.inputs, "versioningConfiguration.status") == "Enabled" for c in configs)
        if not enabled and not is_true(bucket.inputs, "versioning.enabled"):
            yield Violation(bucket.urn, "versioning is not enabled")


@AWS.stack_rule(
    name="s3-encrypted",
    controls=("CKV_AWS_19", "CKV_AWS_145"),
    description="Every bucket has default server-side encryption configured.",
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


# -- KMS, secrets, ECR -----------------------------------------------------------------------------


@AWS.resource_rule(
    name="kms-key-rotation",
    types=("aws:kms/key:Key",),
    controls=("CKV_AWS_7", "AWS Security Hub KMS.4"),
    description="Symmetric KMS keys rotate automatically.",
)
def kms_key_rotation(r: ResourceView, _: Context) -> Iterator[str]:
    spec = str(
        r.inputs.get("customerMasterKeySpec") or r.inputs.get("keySpec") or "SYMMETRIC_DEFAULT"
    )
    if spec == "SYMMETRIC_DEFAULT" and not is_true(r.inputs, "enableKeyRotation"):
        yield "enableKeyRotation is not true"


AWS.value_rule(
    name="secrets-customer-key",
    types=("aws:secretsmanager/secret:Secret",),
    controls=("CKV_AWS_149",),
    description="Secrets Manager secrets are encrypted with a customer-managed KMS key.",
    check=ValueCheck(
        key="kmsKeyId",
        expected=(ANY_VALUE,),
        why="encrypted with the account's default aws/secretsmanager key",
    ),
    enforcement=Enforcement.ADVISORY,
)


AWS.value_rule(
    name="ecr-scan-on-push",
    types=("aws:ecr/repository:Repository",),
    controls=("CKV_AWS_163",),
    description="ECR repositories scan images on push.",
    check=ValueCheck(key="imageScanningConfiguration.scanOnPush"),
)


# -- ECS -------------------------------------------------------------------------------------------


def _containers(r: ResourceView) -> list[Mapping[str, Any]] | None:
    raw = r.inputs.get("containerDefinitions")
    if raw is None or is_unknown(raw):
        return []
    decoded = from_json(raw)
    if not isinstance(decoded, list):
        return None
    return [c for c in decoded if isinstance(c, Mapping)]


AWS.value_rule(
    name="ecs-no-public-ip",
    types=("aws:ecs/service:Service",),
    controls=("CKV_AWS_333", "AWS Security Hub ECS.2"),
    description="ECS services do not assign public IP addresses to tasks.",
    check=ValueCheck(key="networkConfiguration.assignPublicIp", forbidden=(True,)),
)


@AWS.resource_rule(
    name="ecs-no-privileged",
    types=("aws:ecs/taskDefinition:TaskDefinition",),
    controls=("CKV_AWS_334", "AWS Security Hub ECS.4"),
    description="ECS containers do not run privileged.",
)
def ecs_no_privileged(r: ResourceView, _: Context) -> Iterator[str]:
    containers = _containers(r)
    if containers is None:
        yield "containerDefinitions is not a JSON list"
        return
    for c in containers:
        if c.get("privileged") is True:
            yield f"container {c.get('name')} is privileged"


@AWS.resource_rule(
    name="ecs-secrets-not-in-environment",
    types=("aws:ecs/taskDefinition:TaskDefinition",),
    controls=("AWS Security Hub ECS.8",),
    description="Credentials reach containers through `secrets`, never plain `environment`.",
)
def ecs_secrets_not_in_environment(r: ResourceView, _: Context) -> Iterator[str]:
    for c in _containers(r) or []:
        for variable in as_list(c.get("environment")):
            name = str(variable.get("name", "")) if isinstance(variable, Mapping) else ""
            if any(word in name.upper() for word in SECRET_WORDS):
                yield f"container {c.get('name')}: {name} is a plain environment value"


# -- logs and network ------------------------------------------------------------------------------


@AWS.resource_rule(
    name="log-retention",
    types=("aws:cloudwatch/logGroup:LogGroup",),
    controls=("CKV_AWS_66", "CKV_AWS_338", "AWS Security Hub CloudWatch.16"),
    description="Log groups keep logs at least the environment's minimum, and not forever.",
)
def log_retention(r: ResourceView, ctx: Context) -> Iterator[str]:
    days = as_int(r.inputs.get("retentionInDays"))
    if not days:
        yield "no retentionInDays: logs are kept (and billed) forever"
    elif days < ctx.min_log_retention_days:
        yield f"retentionInDays {days} is below {ctx.environment}'s {ctx.min_log_retention_days}"


AWS.value_rule(
    name="log-group-encrypted",
    types=("aws:cloudwatch/logGroup:LogGroup",),
    controls=("CKV_AWS_158",),
    description="Log groups are encrypted with a customer-managed KMS key.",
    check=ValueCheck(key="kmsKeyId", expected=(ANY_VALUE,)),
    enforcement=Enforcement.ADVISORY,
)


AWS.value_rule(
    name="subnet-no-public-ip-on-launch",
    types=("aws:ec2/subnet:Subnet",),
    controls=("CKV_AWS_130", "AWS Security Hub EC2.15"),
    description="Subnets do not give instances public IP addresses on launch.",
    check=ValueCheck(key="mapPublicIpOnLaunch", forbidden=(True,)),
)


@AWS.stack_rule(
    name="vpc-flow-logs",
    controls=("CKV2_AWS_11", "AWS Security Hub EC2.6"),
    description="Every VPC has flow logs.",
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


@AWS.stack_rule(
    name="sg-no-world-ingress",
    controls=(
        "CKV_AWS_24",
        "CKV_AWS_25",
        "CKV_AWS_260",
        "AWS Security Hub EC2.18",
        "AWS Security Hub EC2.19",
    ),
    description="No security group admits 0.0.0.0/0 or ::/0, except the load balancer's 80/443.",
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


@AWS.stack_rule(
    name="aws-required-tags",
    controls=("CKV_AWS_TAGGING (AWS Config required-tags)",),
    description="Taggable AWS resources carry the required tags (own or provider default tags).",
)
def aws_required_tags(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    defaults = provider_defaults(resources, "pulumi:providers:aws", "defaultTags")
    for r in resources:
        if not r.custom or not r.type.startswith("aws:") or "tags" not in r.inputs:
            continue
        own = r.inputs.get("tags")
        tags = defaults | (dict(own) if isinstance(own, Mapping) else {})
        missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
        if missing:
            yield Violation(r.urn, f"missing tags: {', '.join(missing)}")
