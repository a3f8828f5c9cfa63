"""Deploy-readiness rules for AWS: what EC2, ELB, ECS, ECR, ACM, S3, IAM and friends refuse."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from infra.aws.elb_logs import log_writer
from infra.policy.readiness.common import (
    NameCheck,
    by_urn,
    check_name,
    name_rule,
    resource_rule,
    stack_rule,
    unknown,
    upstream,
)
from infra.policy.rules.common import (
    Context,
    ResourceView,
    Violation,
    as_int,
    as_list,
    dig,
    of_types,
)
from infra.settings import CLOUDWATCH_RETENTION_DAYS, fargate_pair_error

SG = "aws:ec2/securityGroup:SecurityGroup"
SG_RULES = (
    "aws:ec2/securityGroupRule:SecurityGroupRule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
)
LB = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
TG = ("aws:lb/targetGroup:TargetGroup", "aws:alb/targetGroup:TargetGroup")
LISTENER = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
TASK = "aws:ecs/taskDefinition:TaskDefinition"
ECS_SERVICE = "aws:ecs/service:Service"
SECRET = "aws:secretsmanager/secret:Secret"  # noqa: S105 - a type token
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"  # noqa: S105 - a type token
CERTIFICATE = "aws:acm/certificate:Certificate"
VALIDATION = "aws:acm/certificateValidation:CertificateValidation"
CACHE_RULE = "aws:ecr/pullThroughCacheRule:PullThroughCacheRule"
PROVIDER = "pulumi:providers:aws"

# Pulumi auto-names a resource "<logical name>-<7 hex>": the name the API sees is 8 longer.
AUTONAME_SUFFIX = 8
# EC2's set for security group and rule descriptions (hashicorp/terraform-provider-aws#18874).
EC2_DESCRIPTION = r"[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*"
# IAM's description set: tab, newline, carriage return and printable Latin-1.
IAM_TEXT = r"[\u0009\u000A\u000D\u0020-\u007E\u00A1-\u00FF]*"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com$")


def _autonamed(r: ResourceView, key: str = "name", prefix_key: str = "namePrefix") -> str | None:
    """The name the API will see: the input, or the logical name with Pulumi's suffix."""
    if r.inputs.get(key) is not None:
        return str(r.inputs[key])
    if r.inputs.get(prefix_key) is not None:
        return None
    return f"{r.name}-{'0' * (AUTONAME_SUFFIX - 1)}"


def _containers(task: ResourceView) -> list[Mapping[str, Any]]:
    raw = task.inputs.get("containerDefinitions")
    if not isinstance(raw, str) or unknown(raw):
        return []
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return []
    return [c for c in parsed if isinstance(c, Mapping)] if isinstance(parsed, list) else []


def _key(container: Mapping[str, Any]) -> str:
    return f"containerDefinitions[{container.get('name')}]"


def _region(resources: Sequence[ResourceView]) -> str | None:
    for provider in of_types(resources, PROVIDER):
        region = provider.inputs.get("region")
        if isinstance(region, str) and not unknown(region):
            return region
    return None


# -- names and descriptions ------------------------------------------------------------------------


@resource_rule(
    name="aws-sg-description-charset",
    types=(SG, *SG_RULES),
    source="EC2 CreateSecurityGroup / AuthorizeSecurityGroupIngress (terraform-provider-aws#18874)",
    description=(
        "Security group and rule descriptions use EC2's character set and stay under 256 "
        "characters."
    ),
)
def sg_description(r: ResourceView, _: Context) -> Iterator[str]:
    """https://github.com/hashicorp/terraform-provider-aws/issues/18874: EC2 refuses any other
    character (an apostrophe included) with InvalidParameterValue, blocking the group."""
    texts = [("description", r.inputs.get("description"))]
    for direction in ("ingress", "egress"):
        for index, entry in enumerate(as_list(r.inputs.get(direction))):
            texts.append((f"{direction}[{index}].description", dig(entry, "description")))
    for key, text in texts:
        yield from check_name(text, key, EC2_DESCRIPTION, 255, "EC2")


@resource_rule(
    name="aws-sg-name",
    types=(SG,),
    source="EC2 CreateSecurityGroup GroupName (terraform-provider-aws validation)",
    description="Security group names fit 255 characters (prefixes 100) and do not start with sg-.",
)
def sg_name(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSecurityGroup.html:
    GroupName up to 255 characters, not starting with sg-; the provider caps name_prefix at 100."""
    name, prefix = r.inputs.get("name"), r.inputs.get("namePrefix")
    yield from check_name(name, "name", r"(?!sg-).*", 255, "EC2")
    yield from check_name(prefix, "namePrefix", r"(?!sg-).*", 100, "the provider")


@resource_rule(
    name="aws-lb-name",
    types=(*LB, *TG),
    source="ELBv2 CreateLoadBalancer / CreateTargetGroup Name",
    description=(
        "Load balancer and target group names: 32 characters of letters, digits and hyphens."
    ),
)
def lb_name(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_CreateLoadBalancer.html:
    at most 32 alphanumerics or hyphens, not starting or ending with a hyphen, not internal-;
    an auto-named one carries Pulumi's 8-character suffix; a prefix is at most 6."""
    pattern = r"(?!internal-)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    yield from check_name(_autonamed(r), "name", pattern, 32, "ELB")
    yield from check_name(r.inputs.get("namePrefix"), "namePrefix", r"[A-Za-z0-9-]+", 6, "ELB")


@resource_rule(
    name="aws-iam-role-name",
    types=("aws:iam/role:Role",),
    source="IAM CreateRole RoleName / Description",
    description=(
        "IAM role names fit 64 characters (prefixes 38); descriptions 1000 printable characters."
    ),
)
def iam_role_name(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html: RoleName
    [\\w+=,.@-]{1,64}; Description up to 1000 characters of the printable Latin-1 set."""
    yield from check_name(_autonamed(r), "name", r"[\w+=,.@-]+", 64, "IAM")
    yield from check_name(r.inputs.get("namePrefix"), "namePrefix", r"[\w+=,.@-]+", 38, "IAM")
    yield from check_name(r.inputs.get("description"), "description", IAM_TEXT, 1000, "IAM")


@resource_rule(
    name="aws-s3-bucket-name",
    types=("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"),
    source="S3 CreateBucket bucket naming rules",
    description=(
        "Bucket names: 3-63 lowercase letters, digits, dots and hyphens, not an IP address."
    ),
)
def s3_bucket_name(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html"""
    name = r.inputs.get("bucket")
    if name is None or unknown(name):
        return
    text = str(name)
    yield from check_name(text, "bucket", r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", 63, "S3")
    try:
        ipaddress.ip_address(text)
        yield f"bucket '{text}' is formatted as an IP address"
    except ValueError:
        pass
    if ".." in text or text.startswith(("xn--", "sthree-")) or text.endswith("-s3alias"):
        yield f"bucket '{text}' uses a reserved prefix, suffix or '..'"


@resource_rule(
    name="aws-rds-identifier",
    types=("aws:rds/instance:Instance",),
    source="RDS CreateDBInstance DBInstanceIdentifier / FinalDBSnapshotIdentifier",
    description=(
        "RDS identifiers: a letter, then letters, digits and single hyphens, at most 63 (255)."
    ),
)
def rds_identifier(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html"""
    pattern = r"[a-zA-Z](?:-?[a-zA-Z0-9])*"
    yield from check_name(r.inputs.get("identifier"), "identifier", pattern, 63, "RDS")
    yield from check_name(
        r.inputs.get("finalSnapshotIdentifier"), "finalSnapshotIdentifier", pattern, 255, "RDS"
    )


name_rule(
    name="aws-elasticache-group-id",
    types=("aws:elasticache/replicationGroup:ReplicationGroup",),
    source="ElastiCache CreateReplicationGroup ReplicationGroupId",
    description=(
        "Replication group ids: a letter, then lowercase letters, digits and single hyphens, 40."
    ),
    check=NameCheck(
        key="replicationGroupId",
        pattern=r"[a-z](?:-?[a-z0-9])*",
        max_length=40,
        service="ElastiCache",
        reference="https://docs.aws.amazon.com/AmazonElastiCache/latest/APIReference/API_CreateReplicationGroup.html",
    ),
)


name_rule(
    name="aws-kms-alias-name",
    types=("aws:kms/alias:Alias",),
    source="KMS CreateAlias AliasName",
    description="KMS aliases start with alias/ (never alias/aws/) and use letters, digits, / _ -.",
    check=NameCheck(
        key="name",
        pattern=r"alias/(?!aws/)[a-zA-Z0-9/_-]+",
        max_length=256,
        service="KMS",
        reference="https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateAlias.html",
    ),
)


name_rule(
    name="aws-secret-name",
    types=(SECRET,),
    source="Secrets Manager CreateSecret Name",
    description="Secret names: 512 of letters, digits and /_+=.@-.",
    check=NameCheck(
        key="name",
        pattern=r"[A-Za-z0-9/_+=.@-]+",
        max_length=512,
        service="Secrets Manager",
        reference="https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_CreateSecret.html",
    ),
)


@resource_rule(
    name="aws-wafv2-names",
    types=("aws:wafv2/webAcl:WebAcl",),
    source="WAFv2 CreateWebACL Name / VisibilityConfig.MetricName",
    description="Web ACL names (128) and metric names (255) use WAF's character sets.",
)
def wafv2_names(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/waf/latest/APIReference/API_VisibilityConfig.html"""
    yield from check_name(r.inputs.get("name"), "name", r"[\w-]+", 128, "WAF")
    metrics = [("visibilityConfig.metricName", dig(r.inputs, "visibilityConfig", "metricName"))]
    for index, rule in enumerate(as_list(r.inputs.get("rules"))):
        metrics.append(
            (
                f"rules[{index}].visibilityConfig.metricName",
                dig(rule, "visibilityConfig", "metricName"),
            )
        )
    for key, metric in metrics:
        yield from check_name(metric, key, r"[\w#:.\-/]+", 255, "WAF")


@resource_rule(
    name="aws-log-group",
    types=("aws:cloudwatch/logGroup:LogGroup",),
    source="CloudWatch Logs CreateLogGroup / PutRetentionPolicy",
    description="Log group names use CloudWatch's set; retention is one of the periods it accepts.",
)
def log_group(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html"""
    yield from check_name(r.inputs.get("name"), "name", r"[.\-_/#A-Za-z0-9]+", 512, "CloudWatch")
    days = as_int(r.inputs.get("retentionInDays"))
    if days is not None and days not in CLOUDWATCH_RETENTION_DAYS:
        yield f"retentionInDays {days} is not a period CloudWatch accepts"


@resource_rule(
    name="aws-ecr-cache-rule",
    types=(CACHE_RULE,),
    source="ECR CreatePullThroughCacheRule ecrRepositoryPrefix / credentialArn",
    description=(
        "Pull-through cache prefixes fit ECR's pattern; credentials live under "
        "ecr-pullthroughcache/."
    ),
)
def ecr_cache_rule(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_CreatePullThroughCacheRule.html"""
    yield from check_name(
        r.inputs.get("ecrRepositoryPrefix"),
        "ecrRepositoryPrefix",
        r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*",
        30,
        "ECR",
    )
    credential = r.inputs.get("credentialArn")
    prefixed = ":secret:ecr-pullthroughcache/" in str(credential)
    if isinstance(credential, str) and not unknown(credential) and not prefixed:
        yield f"credentialArn {credential} is not a secret under ecr-pullthroughcache/"


# -- value combinations ----------------------------------------------------------------------------


@resource_rule(
    name="aws-fargate-cpu-memory",
    types=(TASK,),
    source="ECS RegisterTaskDefinition: Fargate task CPU and memory table",
    description=(
        "Fargate task definitions use a CPU and memory pair from AWS's table, steps included."
    ),
)
def fargate_pair(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-cpu-memory-error.html:
    "No Fargate configuration exists for given values" otherwise."""
    if "FARGATE" not in as_list(r.inputs.get("requiresCompatibilities")):
        return
    cpu, memory = as_int(r.inputs.get("cpu")), as_int(r.inputs.get("memory"))
    if cpu is None or memory is None:
        yield "a Fargate task needs task-level cpu and memory"
        return
    error = fargate_pair_error(cpu, memory)
    if error is not None:
        yield f"cpu/memory: {error}"


@resource_rule(
    name="aws-secret-recovery-window",
    types=(SECRET,),
    source="Secrets Manager DeleteSecret RecoveryWindowInDays (terraform-provider-aws#10259)",
    description="Recovery windows are 0 or 7-30 days, and 0 where an environment is re-created.",
)
def secret_recovery(r: ResourceView, ctx: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DeleteSecret.html:
    7-30 days or none; a secret inside its window keeps its name, so creating the environment
    again fails with "already scheduled for deletion" (terraform-provider-aws#10259)."""
    days = as_int(r.inputs.get("recoveryWindowInDays"))
    if days is None:
        days = 30  # the provider's default
    if days != 0 and not 7 <= days <= 30:
        yield f"recoveryWindowInDays {days} is neither 0 nor 7-30"
    elif not ctx.hardened and days != 0:
        yield (
            f"recoveryWindowInDays {days} in {ctx.environment}: the name stays taken that "
            "long after a destroy, so the environment cannot be created again"
        )


@resource_rule(
    name="aws-ecs-steady-state",
    types=(ECS_SERVICE,),
    source="ECS UpdateService / waiter services-stable (provider wait_for_steady_state)",
    description=(
        "ECS services make `up` wait until their tasks run, so tasks that cannot start fail it."
    ),
)
def ecs_steady_state(r: ResourceView, _: Context) -> Iterator[str]:
    """https://www.pulumi.com/registry/packages/aws/api-docs/ecs/service/#waitforsteadystate:
    without it `up` succeeds while a service whose image cannot be pulled never starts a task."""
    if r.inputs.get("waitForSteadyState") is not True:
        yield "waitForSteadyState is not true: `up` would succeed over tasks that never start"


@resource_rule(
    name="aws-ecs-image-digest",
    types=(TASK,),
    source="ECS RegisterTaskDefinition image (pin by digest)",
    description=(
        "Container images are pinned by digest: the environment runs exactly what was tested."
    ),
)
def ecs_image_digest(r: ResourceView, _: Context) -> Iterator[str]:
    """https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_definition_parameters.html#container_definition_image"""
    for container in _containers(r):
        image = str(container.get("image", ""))
        if not unknown(image) and not DIGEST.search(image):
            yield f"{_key(container)}.image {image} is not pinned by digest"


# -- stack-wide ordering and pairing ---------------------------------------------------------------


@stack_rule(
    name="aws-listener-certificate-validated",
    cloud="aws",
    source="ELBv2 CreateListener UnsupportedCertificate (aws_acm_certificate_validation)",
    description="HTTPS listeners wait for a DNS-validated certificate the stack issued.",
)
def listener_certificate(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://docs.aws.amazon.com/acm/latest/userguide/dns-validation.html: a listener created
    with a certificate still PENDING_VALIDATION fails; the provider's certificate-validation
    resource is what waits for ISSUED."""
    index = by_urn(resources)
    validations = {v.urn for v in of_types(resources, VALIDATION)}
    for listener in of_types(resources, *LISTENER):
        if str(listener.inputs.get("protocol", "HTTP")) not in ("HTTPS", "TLS"):
            continue
        if not listener.inputs.get("certificateArn"):
            yield Violation(listener.urn, "certificateArn: an HTTPS listener has no certificate")
        elif not validations & upstream(listener, index):
            yield Violation(
                listener.urn,
                "certificateArn: the listener does not wait for an "
                "aws:acm/certificateValidation (it may never be issued)",
            )


@stack_rule(
    name="aws-acm-certificate-validated",
    cloud="aws",
    source="ACM RequestCertificate ValidationMethod DNS",
    description="Every DNS-validated certificate has its validation record and waits to be issued.",
)
def certificate_validated(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://docs.aws.amazon.com/acm/latest/userguide/dns-validation.html: without the CNAME
    ACM gives, the certificate stays PENDING_VALIDATION and expires after 72 hours."""
    index = by_urn(resources)
    validations = of_types(resources, VALIDATION)
    records = {r.urn for r in of_types(resources, "aws:route53/record:Record")}
    for certificate in of_types(resources, CERTIFICATE):
        if certificate.inputs.get("validationMethod") != "DNS":
            continue
        waiting = [v for v in validations if certificate.urn in upstream(v, index)]
        if not waiting:
            yield Violation(
                certificate.urn,
                "validationMethod DNS: no aws:acm/certificateValidation waits for this certificate",
            )
        elif not any(records & upstream(v, index) for v in waiting):
            yield Violation(
                certificate.urn, "validationMethod DNS: no route53 record for the validation CNAME"
            )


@stack_rule(
    name="aws-elb-log-writer",
    cloud="aws",
    source="ELB access logs bucket policy (regional ELB account or logdelivery service principal)",
    description="ALB access-log buckets admit the region's log writer.",
)
def elb_log_writer(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://docs.aws.amazon.com/elasticloadbalancing/latest/application/enable-access-logging.html:
    regions opened since August 2022 have no ELB account; their logs come from
    logdelivery.elasticloadbalancing.amazonaws.com. A wrong principal fails CreateLoadBalancer
    ("Access Denied for bucket")."""
    region = _region(resources)
    if region is None:
        return
    expected = log_writer(region)
    policies = of_types(resources, "aws:s3/bucketPolicy:BucketPolicy")
    for lb in of_types(resources, *LB):
        bucket = dig(lb.inputs, "accessLogs", "bucket")
        if dig(lb.inputs, "accessLogs", "enabled") is not True or bucket is None or unknown(bucket):
            continue
        principals = []
        for policy in policies:
            document = policy.inputs.get("policy")
            if policy.inputs.get("bucket") != bucket or not isinstance(document, str):
                continue
            statements = json.loads(document).get("Statement", []) if not unknown(document) else []
            principals += [
                s.get("Principal")
                for s in statements
                if s.get("Effect") == "Allow" and "s3:PutObject" in as_list(s.get("Action"))
            ]
        if expected not in principals:
            yield Violation(
                lb.urn,
                f"accessLogs.bucket: {bucket}'s policy does not let "
                f"{json.dumps(expected)} write the logs in {region}",
            )


@stack_rule(
    name="aws-ecs-image-pullable",
    cloud="aws",
    source=(
        "ECS CannotPullContainerError (ECR pull-through cache / repository in the stack's account)"
    ),
    description=(
        "Task images come from an ECR registry of the stack's own account the tasks can pull from."
    ),
)
def ecs_image_pullable(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_cannot_pull_image.html:
    a private image elsewhere needs repositoryCredentials; in ECR it needs a repository or a
    pull-through cache rule whose prefix the image path starts with."""
    region = _region(resources)
    prefixes = {str(r.inputs.get("ecrRepositoryPrefix")) for r in of_types(resources, CACHE_RULE)}
    repositories = {
        str(r.inputs.get("name")) for r in of_types(resources, "aws:ecr/repository:Repository")
    }
    for task in of_types(resources, TASK):
        for container in _containers(task):
            image = str(container.get("image", ""))
            if unknown(image) or container.get("repositoryCredentials"):
                continue
            host, _slash, path = image.partition("/")
            match = ECR_HOST.match(host)
            repository = re.split(r"[@:]", path, maxsplit=1)[0]
            if match is None:
                yield Violation(
                    task.urn,
                    f"{_key(container)}.image {image}: not in the "
                    "stack's ECR and no repositoryCredentials",
                )
            elif region is not None and match.group(2) != region:
                yield Violation(task.urn, f"image {image}: ECR of another region than {region}")
            elif repository not in repositories and not any(
                repository.startswith(f"{p}/") for p in prefixes
            ):
                yield Violation(
                    task.urn,
                    f"image {image}: no ECR repository or pull-through "
                    "cache rule in the stack serves it",
                )


@stack_rule(
    name="aws-ecs-secret-has-value",
    cloud="aws",
    source="ECS ResourceInitializationError: secret has no value (AWSCURRENT)",
    description="Secrets a task reads have a version the stack writes before the task starts.",
)
def ecs_secret_value(resources: Sequence[ResourceView], _: Context) -> Iterator[Violation]:
    """https://repost.aws/knowledge-center/ecs-fargate-secrets-manager-errors: a secret without
    an AWSCURRENT version stops the task at start ("ResourceInitializationError")."""
    secrets = of_types(resources, SECRET)
    versioned = {d for v in of_types(resources, SECRET_VERSION) for d in v.dependencies}
    for task in of_types(resources, TASK):
        for container in _containers(task):
            for entry in as_list(container.get("secrets")):
                reference = str(dig(entry, "valueFrom") or "")
                if unknown(reference) or not reference:
                    continue
                named = [
                    s
                    for s in secrets
                    if isinstance(s.inputs.get("name"), str)
                    and f":secret:{s.inputs['name']}" in reference
                ]
                if named and named[0].urn not in versioned:
                    secret = named[0].inputs["name"]
                    yield Violation(
                        task.urn,
                        f"secrets[{dig(entry, 'name')}]: {secret} has no version in the stack",
                    )
