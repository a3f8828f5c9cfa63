"""Every deploy-readiness rule against a minimal plan that passes and one that breaks it."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from infra.plans.produce.offline import render
from infra.plans.read.model import Plan, plan_from_dict
from infra.policy import runner
from infra.policy.readiness import READINESS, readiness_names
from infra.policy.rules import RULES, Context, ResourceView
from infra.settings import (
    Cloud,
    LogRetention,
    SettingsError,
    environment,
    load_environment,
)

DIGEST = "@sha256:" + "ab" * 32
URN = "urn:pulumi:{env}::billing-{cloud}::{type}::{name}"


def res(
    type_: str,
    name: str = "thing",
    /,
    *,
    env: str = "dev",
    deps: tuple[str, ...] = (),
    provider: str = "",
    **inputs: Any,
) -> ResourceView:
    cloud = type_.split(":", 1)[0] if not type_.startswith("pulumi:") else type_.rsplit(":", 1)[1]
    urn = URN.format(env=env, cloud=cloud, type=type_, name=name)
    return ResourceView(
        urn, type_, name, inputs, protect=False, dependencies=deps, provider=provider
    )


def _provider(cloud: str, name: str, **inputs: Any) -> ResourceView:
    return res(f"pulumi:providers:{cloud}", name, **inputs)


def _ref(provider: ResourceView) -> str:
    return f"{provider.urn}::0000"


@dataclass(frozen=True)
class Case:
    passing: list[ResourceView]
    failing: list[ResourceView]
    env: str = "dev"


# -- AWS fixtures ----------------------------------------------------------------------------------

SG = "aws:ec2/securityGroup:SecurityGroup"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SECRET = "aws:secretsmanager/secret:Secret"
LISTENER = "aws:lb/listener:Listener"
CERT = "aws:acm/certificate:Certificate"
VALIDATION = "aws:acm/certificateValidation:CertificateValidation"
RECORD = "aws:route53/record:Record"
LB = "aws:lb/loadBalancer:LoadBalancer"
POLICY = "aws:s3/bucketPolicy:BucketPolicy"
RULE = "aws:ecr/pullThroughCacheRule:PullThroughCacheRule"
AWS_PROVIDER = _provider("aws", "aws", region="us-east-1")
ECR = "111111111111.dkr.ecr.us-east-1.amazonaws.com"


def _task(image: str, cpu: str = "256", memory: str = "512", **container: Any) -> ResourceView:
    definitions = json.dumps([{"name": "api", "image": image, **container}])
    return res(
        TASK,
        "task",
        requiresCompatibilities=["FARGATE"],
        cpu=cpu,
        memory=memory,
        containerDefinitions=definitions,
    )


def _certificate_chain(
    *, record: bool, validation: bool, listener_waits: bool
) -> list[ResourceView]:
    cert = res(CERT, "cert", domainName="api.dev.example.org", validationMethod="DNS")
    chain = [cert]
    deps: tuple[str, ...] = (cert.urn,)
    if record:
        rec = res(RECORD, "validation", deps=(cert.urn,), zoneId="Z1", type="CNAME")
        chain.append(rec)
        deps = (cert.urn, rec.urn)
    if validation:
        chain.append(res(VALIDATION, "validated", deps=deps, certificateArn="arn:cert"))
    waits = (chain[-1].urn,) if listener_waits and validation else (cert.urn,)
    chain.append(res(LISTENER, "https", deps=waits, protocol="HTTPS", certificateArn="arn:cert"))
    return chain


def _logs(principal: dict[str, str], region: str = "us-east-1") -> list[ResourceView]:
    document = json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": principal,
                    "Action": "s3:PutObject",
                    "Resource": "x",
                }
            ]
        }
    )
    return [
        _provider("aws", "aws", region=region),
        res(LB, "alb", accessLogs={"enabled": True, "bucket": "logs"}),
        res(POLICY, "logs-policy", bucket="logs", policy=document),
    ]


def _pull(image: str, *, rule: bool = True) -> list[ResourceView]:
    found = [AWS_PROVIDER, _task(image)]
    if rule:
        found.append(
            res(RULE, "cache", ecrRepositoryPrefix="billing-dev", upstreamRegistryUrl="ghcr.io")
        )
    return found


def _secret_read(*, versioned: bool) -> list[ResourceView]:
    secret = res(SECRET, "jwt", name="billing/dev/jwt-secret")
    found = [secret]
    if versioned:
        found.append(
            res(
                "aws:secretsmanager/secretVersion:SecretVersion",
                "jwt-v",
                deps=(secret.urn,),
                secretString="[secret]",
            )
        )
    arn = "arn:aws:secretsmanager:us-east-1:111111111111:secret:billing/dev/jwt-secret-AbCdEf"
    found.append(_task(f"{ECR}/billing-dev/x{DIGEST}", secrets=[{"name": "JWT", "valueFrom": arn}]))
    return found


# -- GCP fixtures ----------------------------------------------------------------------------------

RUN = "gcp:cloudrunv2/service:Service"
POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
GSECRET = "gcp:secretmanager/secret:Secret"
GVERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SERVICE = "gcp:projects/service:Service"
AR = "gcp:artifactregistry/repository:Repository"
AR_GRANT = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
AGENT = "serviceAccount:service-1@serverless-robot-prod.iam.gserviceaccount.com"
IMAGE = f"us-central1-docker.pkg.dev/p/billing-dev/org/api{DIGEST}"


def _run(**template: Any) -> ResourceView:
    container = {"image": IMAGE, "startupProbe": {"httpGet": {"path": "/health"}}}
    return res(RUN, "api", name="billing-dev-api", template={"containers": [container], **template})


def _apis(*, provider_waits: bool) -> list[ResourceView]:
    api = res(SERVICE, "apis-sqladmin", service="sqladmin.googleapis.com")
    provider = _provider("gcp", "gcp", deps=(api.urn,) if provider_waits else ())
    sql = res(SQL, "db", provider=_ref(provider), name="db")
    return [api, provider, sql]


def _sql(**backup: Any) -> ResourceView:
    settings = {
        "tier": "db-custom-1-3840",
        "edition": "ENTERPRISE",
        "backupConfiguration": {"enabled": True, **backup},
    }
    return res(SQL, "db", settings=settings)


def _secret_first(*, before: bool) -> list[ResourceView]:
    secret = res(GSECRET, "stripe", secretId="billing-dev-stripe-api-key")
    version = res(GVERSION, "stripe-v", deps=(secret.urn,), secretData="[secret]")
    reference = "projects/p/secrets/billing-dev-stripe-api-key"
    env = [{"name": "STRIPE", "valueSource": {"secretKeyRef": {"secret": reference}}}]
    run = res(
        RUN,
        "api",
        deps=(version.urn,) if before else (),
        template={"containers": [{"image": IMAGE, "envs": env}]},
    )
    return [secret, version, run]


def _cmek(*, waits: bool) -> list[ResourceView]:
    grant = res("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "grant")
    sleep = res("time:index/sleep:Sleep", "propagated", deps=(grant.urn,))
    sql = res(SQL, "db", deps=(sleep.urn,) if waits else (grant.urn,), encryptionKeyName="k")
    return [grant, sleep, sql]


def _certificate(*, record: bool) -> list[ResourceView]:
    address = res("gcp:compute/globalAddress:GlobalAddress", "lb", name="billing-dev-lb")
    found = [
        address,
        res(
            "gcp:compute/managedSslCertificate:ManagedSslCertificate",
            "cert",
            name="c",
            managed={"domains": ["api.example.org"]},
        ),
    ]
    if record:
        found.append(
            res(
                "gcp:dns/recordSet:RecordSet",
                "dns",
                deps=(address.urn,),
                name="api.example.org.",
                type="A",
                rrdatas=["203.0.113.1"],
            )
        )
    return found


def _pullable(*, grant: bool, image: str = IMAGE) -> list[ResourceView]:
    found = [
        res(AR, "images", repositoryId="billing-dev"),
        res(RUN, "api", template={"containers": [{"image": image}]}),
    ]
    if grant:
        found.append(
            res(
                AR_GRANT,
                "reader",
                repository="billing-dev",
                role="roles/artifactregistry.reader",
                member=AGENT,
            )
        )
    return found


def _ca(*, mounted: bool) -> list[ResourceView]:
    redis = res(
        "gcp:redis/instance:Instance", "redis", transitEncryptionMode="SERVER_AUTHENTICATION"
    )
    secret = res(GSECRET, "ca", secretId="billing-dev-redis-server-ca")
    version = res(GVERSION, "ca-v", deps=(secret.urn, redis.urn), secretData="[secret]")
    volume = {"name": "ca", "secret": {"secret": "projects/p/secrets/billing-dev-redis-server-ca"}}
    run = _run(volumes=[volume]) if mounted else _run()
    return [redis, secret, version, run]


CASES: dict[str, Case] = {
    # AWS
    "aws-sg-description-charset": Case(
        [res(SG, "alb", description="ALB", egress=[{"description": "To the service port 8000"}])],
        [
            res(SG, "alb", description="ALB", egress=[{"description": "To the services' port"}]),
            res(SG, "db", description="PostgreSQL \u2192 services"),
        ],
    ),
    "aws-sg-name": Case(
        [res(SG, "alb", namePrefix="billing-dev-alb-")],
        [res(SG, "alb", name="sg-billing"), res(SG, "alb", namePrefix="x" * 101)],
    ),
    "aws-lb-name": Case(
        [
            res(LB, "alb", name="billing-production"),
            res("aws:lb/targetGroup:TargetGroup", "api-tg"),
        ],
        [
            res(LB, "alb", name="billing-production-application-lb"),
            res("aws:lb/targetGroup:TargetGroup", "edge-production-api-target-group"),
        ],
    ),
    "aws-iam-role-name": Case(
        [res("aws:iam/role:Role", "compute-api-execution-role", description="ECS agent")],
        [
            res("aws:iam/role:Role", "r", name="a" * 65),
            res("aws:iam/role:Role", "compute-" + "x" * 60),
        ],
    ),
    "aws-s3-bucket-name": Case(
        [res("aws:s3/bucket:Bucket", "b", bucket="billing-dev-backups-111111111111")],
        [
            res("aws:s3/bucket:Bucket", "b", bucket="Billing_Dev"),
            res("aws:s3/bucket:Bucket", "b", bucket="192.168.1.10"),
            res("aws:s3/bucket:Bucket", "b", bucket="xn--billing"),
        ],
    ),
    "aws-rds-identifier": Case(
        [res("aws:rds/instance:Instance", "db", identifier="billing-dev-postgres")],
        [
            res("aws:rds/instance:Instance", "db", identifier="billing--dev"),
            res("aws:rds/instance:Instance", "db", identifier="1billing"),
        ],
    ),
    "aws-elasticache-group-id": Case(
        [
            res(
                "aws:elasticache/replicationGroup:ReplicationGroup",
                "r",
                replicationGroupId="billing-dev",
            )
        ],
        [
            res(
                "aws:elasticache/replicationGroup:ReplicationGroup",
                "r",
                replicationGroupId="billing-production-redis-cluster-primary-1",
            )
        ],
    ),
    "aws-kms-alias-name": Case(
        [res("aws:kms/alias:Alias", "a", name="alias/billing-dev-data")],
        [
            res("aws:kms/alias:Alias", "a", name="billing-dev-data"),
            res("aws:kms/alias:Alias", "a", name="alias/aws/billing"),
        ],
    ),
    "aws-secret-name": Case(
        [res(SECRET, "s", name="billing/dev/jwt-secret")],
        [res(SECRET, "s", name="billing dev jwt")],
    ),
    "aws-wafv2-names": Case(
        [
            res(
                "aws:wafv2/webAcl:WebAcl",
                "w",
                name="billing-dev",
                visibilityConfig={"metricName": "billing-dev"},
            )
        ],
        [
            res(
                "aws:wafv2/webAcl:WebAcl",
                "w",
                name="billing dev",
                visibilityConfig={"metricName": "billing dev"},
            )
        ],
    ),
    "aws-log-group": Case(
        [
            res(
                "aws:cloudwatch/logGroup:LogGroup",
                "l",
                name="/ecs/billing-dev/api",
                retentionInDays=14,
            )
        ],
        [res("aws:cloudwatch/logGroup:LogGroup", "l", name="/ecs/billing dev", retentionInDays=10)],
    ),
    "aws-ecr-cache-rule": Case(
        [
            res(
                RULE,
                "c",
                ecrRepositoryPrefix="billing-dev",
                credentialArn="arn:aws:secretsmanager:us-east-1:1:secret:ecr-pullthroughcache/b-1",
            )
        ],
        [
            res(RULE, "c", ecrRepositoryPrefix="Billing_Dev"),
            res(
                RULE,
                "c",
                ecrRepositoryPrefix="billing-dev",
                credentialArn="arn:aws:secretsmanager:us-east-1:1:secret:ghcr-token-1",
            ),
        ],
    ),
    "aws-fargate-cpu-memory": Case(
        [_task("x", "256", "512"), _task("x", "2048", "5120")],
        [_task("x", "1024", "1024"), _task("x", "2048", "4608"), _task("x", "300", "512")],
    ),
    "aws-secret-recovery-window": Case(
        [res(SECRET, "s", recoveryWindowInDays=0)],
        [res(SECRET, "s", recoveryWindowInDays=7), res(SECRET, "s", recoveryWindowInDays=3)],
    ),
    "aws-ecs-steady-state": Case(
        [res("aws:ecs/service:Service", "api", waitForSteadyState=True)],
        [res("aws:ecs/service:Service", "api")],
    ),
    "aws-ecs-image-digest": Case(
        [_task(f"{ECR}/billing-dev/org/api:0.1.0{DIGEST}")],
        [_task(f"{ECR}/billing-dev/org/api:0.1.0")],
    ),
    "aws-listener-certificate-validated": Case(
        _certificate_chain(record=True, validation=True, listener_waits=True),
        _certificate_chain(record=True, validation=True, listener_waits=False),
    ),
    "aws-acm-certificate-validated": Case(
        _certificate_chain(record=True, validation=True, listener_waits=True),
        _certificate_chain(record=False, validation=False, listener_waits=False),
    ),
    "aws-elb-log-writer": Case(
        [*_logs({"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}, "ap-southeast-4")],
        [*_logs({"AWS": "arn:aws:iam::127311923021:root"}, "ap-southeast-4")],
    ),
    "aws-ecs-image-pullable": Case(
        _pull(f"{ECR}/billing-dev/org/api{DIGEST}"),
        [
            *_pull(f"ghcr.io/org/api{DIGEST}"),
            *_pull(f"{ECR}/billing-dev/org/api{DIGEST}", rule=False),
        ],
    ),
    "aws-ecs-secret-has-value": Case(_secret_read(versioned=True), _secret_read(versioned=False)),
    # GCP
    "gcp-service-account-id": Case(
        [res("gcp:serviceaccount/account:Account", "a", accountId="billing-dev-api")],
        [
            res(
                "gcp:serviceaccount/account:Account",
                "a",
                accountId="billing-production-migrations-job",
            )
        ],
    ),
    "gcp-cloud-run-name": Case(
        [_run()],
        [res(RUN, "api", name="Billing_API"), res(RUN, "api", name="b" * 50)],
    ),
    "gcp-compute-name": Case(
        [res("gcp:compute/network:Network", "n", name="billing-dev")],
        [
            res("gcp:compute/network:Network", "n", name="billing_dev"),
            res("gcp:compute/network:Network", "n", name="billing-dev-"),
        ],
    ),
    "gcp-secret-id": Case(
        [res(GSECRET, "s", secretId="billing-dev-jwt-secret")],
        [res(GSECRET, "s", secretId="billing/dev/jwt")],
    ),
    "gcp-vpc-connector-name": Case(
        [res("gcp:vpcaccess/connector:Connector", "c", name="run-dev")],
        [res("gcp:vpcaccess/connector:Connector", "c", name="billing-production-connector")],
    ),
    "gcp-redis-name": Case(
        [res("gcp:redis/instance:Instance", "r", name="billing-dev-redis")],
        [
            res(
                "gcp:redis/instance:Instance",
                "r",
                name="billing-production-redis-memorystore-cache",
            )
        ],
    ),
    "gcp-labels": Case(
        [res(GSECRET, "s", labels={"environment": "dev", "cost-centre": "billing-platform"})],
        [
            res(GSECRET, "s", labels={"repository": "example-org/billing-platform"}),
            res(SQL, "db", settings={"userLabels": {"Environment": "dev"}}),
        ],
    ),
    "gcp-cloudsql-backup-retention": Case(
        [_sql(transactionLogRetentionDays=1, backupRetentionSettings={"retainedBackups": 2})],
        [
            _sql(transactionLogRetentionDays=1, backupRetentionSettings={"retainedBackups": 1}),
            _sql(transactionLogRetentionDays=7, backupRetentionSettings={"retainedBackups": 7}),
        ],
    ),
    "gcp-cloudsql-edition": Case(
        [_sql(transactionLogRetentionDays=7)],
        [
            res(SQL, "db", settings={"tier": "db-custom-1-3840"}),
            res(SQL, "db", settings={"tier": "db-custom-1-3840", "edition": "ENTERPRISE_PLUS"}),
            _sql(transactionLogRetentionDays=14),
        ],
    ),
    "gcp-worker-pool-scaling": Case(
        [
            res(
                POOL,
                "w",
                scaling={"scalingMode": "MANUAL", "manualInstanceCount": 1},
                template={"vpcAccess": {"networkInterfaces": [{"network": "n"}]}},
            )
        ],
        [
            res(
                POOL,
                "w",
                scaling={"scalingMode": "AUTOMATIC", "minInstanceCount": 1},
                template={"vpcAccess": {"connector": "c"}},
            )
        ],
    ),
    "gcp-cloud-run-startup-probe": Case(
        [_run()],
        [res(RUN, "api", template={"containers": [{"image": IMAGE}]})],
    ),
    "gcp-api-enabled": Case(
        _apis(provider_waits=True),
        [*_apis(provider_waits=False), res("gcp:redis/instance:Instance", "r")],
    ),
    "gcp-secret-version-first": Case(_secret_first(before=True), _secret_first(before=False)),
    "gcp-cmek-grant-propagated": Case(_cmek(waits=True), _cmek(waits=False)),
    "gcp-managed-certificate-dns": Case(_certificate(record=True), _certificate(record=False)),
    "gcp-image-pullable": Case(
        _pullable(grant=True),
        [*_pullable(grant=False), *_pullable(grant=True, image="ghcr.io/org/api:0.1.0")],
    ),
    "gcp-memorystore-ca-delivered": Case(_ca(mounted=True), _ca(mounted=False)),
}


def _violations(name: str, resources: list[ResourceView], env: str) -> list[Any]:
    rule = next(r for r in READINESS if r.name == name)
    return rule.evaluate(resources, Context(env))


def test_at_least_25_rules_each_with_a_case() -> None:
    assert len(READINESS) >= 25
    assert {r.name for r in READINESS} == set(CASES)
    assert all(r in RULES for r in READINESS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_passes_a_minimal_good_plan(name: str) -> None:
    case = CASES[name]
    assert _violations(name, case.passing, case.env) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fails_a_minimal_plan_that_breaks_it(name: str) -> None:
    case = CASES[name]
    found = _violations(name, case.failing, case.env)
    assert found, name
    failing = {r.urn for r in case.failing}
    assert all(v.urn in failing for v in found)
    assert all(v.message for v in found)


@pytest.mark.parametrize("rule", READINESS, ids=lambda r: r.name)
def test_each_rule_names_and_links_what_it_reflects(rule: Any) -> None:
    check = rule.resource_check or rule.stack_check
    doc = inspect.getdoc(check) or ""
    assert "http" in doc or "#" in doc, rule.name
    assert rule.controls
    assert rule.controls[0]


@pytest.fixture(scope="module")
def shipped() -> dict[str, list[Plan]]:
    return {
        e: [render(environment(e), c) for c in (Cloud.AWS, Cloud.GCP)]
        for e in ("dev", "staging", "production")
    }


@pytest.mark.parametrize("env", ["dev", "staging", "production"])
def test_shipped_environments_pass_every_readiness_rule(
    shipped: dict[str, list[Plan]], env: str
) -> None:
    result = runner.evaluate(shipped[env], [environment(env)])
    found = [f for f in result.findings if f.rule in readiness_names()]
    assert found == [], runner.console(result)


def test_a_broken_shipped_plan_fails_with_resource_and_key(shipped: dict[str, list[Plan]]) -> None:
    aws = shipped["dev"][0]
    data = json.loads(aws.to_json())
    [alb] = [r for r in data["resources"] if r["name"] == "firewall-alb"]
    alb["inputs"]["egress"][0]["description"] = "To the services' port"
    result = runner.evaluate([plan_from_dict(data, "edited")], [environment("dev")])
    [failure] = [f for f in result.failures if f.rule == "aws-sg-description-charset"]
    assert failure.urn == alb["urn"]
    assert "egress[0].description" in failure.message


EXEMPTION = """[[policy.exemptions]]
rule = "gcp-api-enabled"
resource = "*"
reason = "r"
expires = 2099-01-01
"""


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        (
            '[policy.enforcement]\naws-fargate-cpu-memory = "advisory"\n',
            "policy.enforcement.aws-fargate-cpu-memory",
        ),
        (EXEMPTION, "policy.exemptions[0].rule"),
    ],
)
def test_readiness_rules_cannot_be_downgraded_or_exempted(
    environments_copy: Path, setting: str, key: str
) -> None:
    path = environments_copy / "dev" / "settings.toml"
    path.write_text(path.read_text().replace("[policy]\n", "") + setting)
    settings = load_environment("dev", root=environments_copy)
    with pytest.raises(SettingsError) as error:
        runner.check_policy_settings(settings)
    assert error.value.key == key


def test_log_group_retention_periods_are_the_settings_loader_s() -> None:
    """aws-log-group and the settings loader accept the same CloudWatch periods: one list."""
    adapter = TypeAdapter(LogRetention)
    for days in range(4000):
        group = res("aws:cloudwatch/logGroup:LogGroup", "l", retentionInDays=days)
        try:
            adapter.validate_python(days)
        except ValidationError:
            assert _violations("aws-log-group", [group], "dev"), days
        else:
            assert _violations("aws-log-group", [group], "dev") == [], days
