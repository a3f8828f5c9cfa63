"""Every policy rule against a resource that passes and one that fails."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from infra.policy.readiness import readiness_names
from infra.policy.rules import RULES, Context, ResourceView, rules_by_name

URN = "urn:pulumi:{env}::billing-{cloud}::{type}::{name}"


def res(
    type_: str,
    logical: str = "thing",
    env: str = "production",
    /,
    *,
    protect: bool = False,
    deps: tuple[str, ...] = (),
    **inputs: Any,
) -> ResourceView:
    cloud = type_.split(":", 1)[0]
    urn = URN.format(env=env, cloud=cloud, type=type_, name=logical)
    return ResourceView(urn, type_, logical, inputs, protect, deps)


def urn_of(type_: str, name: str, env: str = "production") -> str:
    return URN.format(env=env, cloud=type_.split(":", 1)[0], type=type_, name=name)


@dataclass(frozen=True)
class Case:
    passing: list[ResourceView]
    failing: list[ResourceView]
    env: str = "production"
    extra: dict[str, Any] = field(default_factory=dict)


RDS = "aws:rds/instance:Instance"
CACHE = "aws:elasticache/replicationGroup:ReplicationGroup"
LISTENER = "aws:lb/listener:Listener"
LB = "aws:lb/loadBalancer:LoadBalancer"
BUCKET = "aws:s3/bucket:Bucket"
SG = "aws:ec2/securityGroup:SecurityGroup"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
REDIS = "gcp:redis/instance:Instance"
GCS = "gcp:storage/bucket:Bucket"
AWS_TAGS = {
    "environment": "production",
    "service": "api",
    "cost-centre": "c",
    "managed-by": "pulumi",
    "repository": "o/r",
}
GCP_LABELS = {
    "environment": "production",
    "service": "api",
    "cost-centre": "c",
    "managed-by": "pulumi",
}


def _task(**container: Any) -> str:
    return json.dumps([{"name": "api", "image": "x", **container}])


def _pab(on: bool) -> ResourceView:
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    settings = dict.fromkeys(flags, True) | ({} if on else {"restrictPublicBuckets": False})
    return res(
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "b-pab",
        deps=(urn_of(BUCKET, "b"),),
        **settings,
    )


def _lb_world(port: int) -> list[ResourceView]:
    lb_sg = res(
        SG,
        "alb-sg",
        ingress=[
            {"cidrBlocks": ["0.0.0.0/0"], "fromPort": port, "toPort": port, "protocol": "tcp"}
        ],
    )
    return [lb_sg, res(LB, "alb", deps=(lb_sg.urn,), securityGroups=["sg-1"])]


CASES: dict[str, Case] = {
    "rds-storage-encrypted": Case(
        [res(RDS, storageEncrypted=True, kmsKeyId="arn:key")],
        [res(RDS, storageEncrypted=False), res(RDS, storageEncrypted=True)],
    ),
    "rds-not-public": Case(
        [res(RDS, publiclyAccessible=False)], [res(RDS, publiclyAccessible=True)]
    ),
    "rds-multi-az": Case([res(RDS, multiAz=True)], [res(RDS, multiAz=False)]),
    "rds-backup-retention": Case(
        [res(RDS, backupRetentionPeriod=7)], [res(RDS, backupRetentionPeriod=1), res(RDS)]
    ),
    "rds-deletion-protection": Case([res(RDS, deletionProtection=True)], [res(RDS)]),
    "rds-encryption-in-transit": Case(
        [
            res(RDS, "db", parameterGroupName="pg", engine="postgres"),
            res(
                "aws:rds/parameterGroup:ParameterGroup",
                "pg",
                name="pg",
                parameters=[{"name": "rds.force_ssl", "value": "1"}],
            ),
        ],
        [
            res(RDS, "db", parameterGroupName="pg", engine="postgres"),
            res(
                "aws:rds/parameterGroup:ParameterGroup",
                "pg",
                name="pg",
                parameters=[{"name": "rds.force_ssl", "value": "0"}],
            ),
        ],
    ),
    "elasticache-encrypted-at-rest": Case(
        [res(CACHE, atRestEncryptionEnabled=True)], [res(CACHE, atRestEncryptionEnabled=False)]
    ),
    "elasticache-encrypted-in-transit": Case(
        [res(CACHE, transitEncryptionEnabled=True)], [res(CACHE)]
    ),
    "elasticache-failover": Case(
        [res(CACHE, automaticFailoverEnabled=True, multiAzEnabled=True)],
        [res(CACHE, automaticFailoverEnabled=True, multiAzEnabled=False)],
    ),
    "elasticache-snapshots": Case(
        [res(CACHE, snapshotRetentionLimit=7)], [res(CACHE, snapshotRetentionLimit=0)]
    ),
    "alb-https-only": Case(
        [
            res(LISTENER, protocol="HTTPS"),
            res(
                LISTENER,
                protocol="HTTP",
                defaultActions=[{"type": "redirect", "redirect": {"protocol": "HTTPS"}}],
            ),
        ],
        [res(LISTENER, protocol="HTTP", defaultActions=[{"type": "forward"}])],
    ),
    "alb-modern-tls": Case(
        [res(LISTENER, protocol="HTTPS", sslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06")],
        [res(LISTENER, protocol="HTTPS", sslPolicy="ELBSecurityPolicy-2016-08")],
    ),
    "alb-waf": Case(
        [
            res(LB, "alb"),
            res("aws:wafv2/webAclAssociation:WebAclAssociation", "waf", deps=(urn_of(LB, "alb"),)),
        ],
        [res(LB, "alb"), res(LB, "internal", internal=True)],
    ),
    "alb-drop-invalid-headers": Case(
        [res(LB, dropInvalidHeaderFields=True)], [res(LB, dropInvalidHeaderFields=False)]
    ),
    "alb-deletion-protection": Case([res(LB, enableDeletionProtection=True)], [res(LB)]),
    "s3-public-access-blocked": Case(
        [res(BUCKET, "b"), _pab(on=True)], [res(BUCKET, "b"), _pab(on=False)]
    ),
    "s3-versioning": Case(
        [
            res(BUCKET, "b", bucket="bk"),
            res(
                "aws:s3/bucketVersioning:BucketVersioning",
                "v",
                bucket="bk",
                versioningConfiguration={"status": "Enabled"},
            ),
        ],
        [
            res(BUCKET, "b", bucket="bk"),
            res(
                "aws:s3/bucketVersioning:BucketVersioning",
                "v",
                bucket="bk",
                versioningConfiguration={"status": "Suspended"},
            ),
        ],
    ),
    "s3-encrypted": Case(
        [
            res(BUCKET, "b"),
            res(
                "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                "e",
                deps=(urn_of(BUCKET, "b"),),
                rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
            ),
        ],
        [res(BUCKET, "b")],
    ),
    "kms-key-rotation": Case(
        [
            res("aws:kms/key:Key", enableKeyRotation=True),
            res("aws:kms/key:Key", customerMasterKeySpec="RSA_2048"),
        ],
        [res("aws:kms/key:Key", enableKeyRotation=False)],
    ),
    "secrets-customer-key": Case(
        [res("aws:secretsmanager/secret:Secret", kmsKeyId="arn:key")],
        [res("aws:secretsmanager/secret:Secret")],
    ),
    "ecr-scan-on-push": Case(
        [res("aws:ecr/repository:Repository", imageScanningConfiguration={"scanOnPush": True})],
        [res("aws:ecr/repository:Repository")],
    ),
    "ecs-no-public-ip": Case(
        [res("aws:ecs/service:Service", networkConfiguration={"assignPublicIp": False})],
        [res("aws:ecs/service:Service", networkConfiguration={"assignPublicIp": True})],
    ),
    "ecs-no-privileged": Case(
        [res(TASK, containerDefinitions=_task(privileged=False))],
        [
            res(TASK, containerDefinitions=_task(privileged=True)),
            res(TASK, containerDefinitions="{"),
        ],
    ),
    "ecs-secrets-not-in-environment": Case(
        [
            res(
                TASK,
                containerDefinitions=_task(
                    environment=[{"name": "LOG_LEVEL", "value": "info"}],
                    secrets=[{"name": "DATABASE_PASSWORD", "valueFrom": "arn:secret"}],
                ),
            )
        ],
        [
            res(
                TASK,
                containerDefinitions=_task(
                    environment=[{"name": "STRIPE_API_KEY", "value": "sk_test_x"}]
                ),
            )
        ],
    ),
    "log-retention": Case(
        [res("aws:cloudwatch/logGroup:LogGroup", retentionInDays=30)],
        [
            res("aws:cloudwatch/logGroup:LogGroup", retentionInDays=7),
            res("aws:cloudwatch/logGroup:LogGroup"),
        ],
        extra={"min_log_retention_days": 30},
    ),
    "log-group-encrypted": Case(
        [res("aws:cloudwatch/logGroup:LogGroup", kmsKeyId="arn:key")],
        [res("aws:cloudwatch/logGroup:LogGroup")],
    ),
    "subnet-no-public-ip-on-launch": Case(
        [res("aws:ec2/subnet:Subnet", mapPublicIpOnLaunch=False)],
        [res("aws:ec2/subnet:Subnet", mapPublicIpOnLaunch=True)],
    ),
    "vpc-flow-logs": Case(
        [
            res("aws:ec2/vpc:Vpc", "vpc"),
            res("aws:ec2/flowLog:FlowLog", deps=(urn_of("aws:ec2/vpc:Vpc", "vpc"),)),
        ],
        [res("aws:ec2/vpc:Vpc", "vpc")],
    ),
    "sg-no-world-ingress": Case(
        _lb_world(443),
        [
            *_lb_world(22),
            res(
                SG,
                "db-sg",
                ingress=[
                    {
                        "cidrBlocks": ["0.0.0.0/0"],
                        "fromPort": 5432,
                        "toPort": 5432,
                        "protocol": "tcp",
                    }
                ],
            ),
            res(
                "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
                cidrIpv4="0.0.0.0/0",
                fromPort=443,
                toPort=443,
                ipProtocol="tcp",
            ),
        ],
    ),
    "aws-required-tags": Case(
        [
            res(RDS, tags=AWS_TAGS),
            res("pulumi:providers:aws", "aws", defaultTags=json.dumps({"tags": AWS_TAGS})),
            res(BUCKET, tags={}),
        ],
        [res(RDS, tags={"environment": "production"})],
    ),
    "cloudsql-no-public-ip": Case(
        [res(SQL, settings={"ipConfiguration": {"ipv4Enabled": False}})],
        [res(SQL, settings={"ipConfiguration": {}}), res(SQL)],
    ),
    "cloudsql-no-open-networks": Case(
        [res(SQL, settings={"ipConfiguration": {"authorizedNetworks": [{"value": "10.0.0.0/8"}]}})],
        [res(SQL, settings={"ipConfiguration": {"authorizedNetworks": [{"value": "0.0.0.0/0"}]}})],
    ),
    "cloudsql-require-tls": Case(
        [res(SQL, settings={"ipConfiguration": {"sslMode": "ENCRYPTED_ONLY"}})],
        [res(SQL, settings={"ipConfiguration": {"sslMode": "ALLOW_UNENCRYPTED_AND_ENCRYPTED"}})],
    ),
    "cloudsql-high-availability": Case(
        [res(SQL, settings={"availabilityType": "REGIONAL"})],
        [res(SQL, settings={"availabilityType": "ZONAL"})],
    ),
    "cloudsql-backups": Case(
        [
            res(
                SQL,
                settings={
                    "backupConfiguration": {"enabled": True, "pointInTimeRecoveryEnabled": True}
                },
            )
        ],
        [
            res(SQL, settings={"backupConfiguration": {"enabled": True}}),
            res(SQL, settings={"backupConfiguration": {"enabled": False}}),
        ],
    ),
    "cloudsql-deletion-protection": Case(
        [res(SQL, deletionProtection=True), res(SQL)], [res(SQL, deletionProtection=False)]
    ),
    "memorystore-encrypted-in-transit": Case(
        [res(REDIS, transitEncryptionMode="SERVER_AUTHENTICATION")],
        [res(REDIS, transitEncryptionMode="DISABLED")],
    ),
    "memorystore-auth": Case([res(REDIS, authEnabled=True)], [res(REDIS, authEnabled=False)]),
    "memorystore-high-availability": Case(
        [res(REDIS, tier="STANDARD_HA")], [res(REDIS, tier="BASIC")]
    ),
    "gcp-kms-rotation": Case(
        [res("gcp:kms/cryptoKey:CryptoKey", rotationPeriod="7776000s")],
        [
            res("gcp:kms/cryptoKey:CryptoKey", rotationPeriod="31536000s"),
            res("gcp:kms/cryptoKey:CryptoKey"),
        ],
    ),
    "gcs-uniform-access": Case([res(GCS, uniformBucketLevelAccess=True)], [res(GCS)]),
    "gcs-public-access-prevention": Case(
        [res(GCS, publicAccessPrevention="enforced")],
        [res(GCS, publicAccessPrevention="inherited")],
    ),
    "gcs-versioning": Case(
        [res(GCS, versioning={"enabled": True})], [res(GCS, versioning={"enabled": False})]
    ),
    "gcp-firewall-no-world-ingress": Case(
        [
            res(
                "gcp:compute/firewall:Firewall",
                sourceRanges=["0.0.0.0/0"],
                allows=[{"protocol": "tcp", "ports": ["443"]}],
            ),
            res(
                "gcp:compute/firewall:Firewall",
                sourceRanges=["0.0.0.0/0"],
                direction="EGRESS",
                allows=[{"protocol": "tcp"}],
            ),
        ],
        [
            res(
                "gcp:compute/firewall:Firewall",
                sourceRanges=["0.0.0.0/0"],
                allows=[{"protocol": "tcp", "ports": ["22"]}],
            )
        ],
    ),
    "gcp-subnet-flow-logs": Case(
        [res("gcp:compute/subnetwork:Subnetwork", logConfig={"flowSampling": 0.5})],
        [res("gcp:compute/subnetwork:Subnetwork")],
    ),
    "gcp-subnet-private-google-access": Case(
        [res("gcp:compute/subnetwork:Subnetwork", privateIpGoogleAccess=True)],
        [res("gcp:compute/subnetwork:Subnetwork", privateIpGoogleAccess=False)],
    ),
    "gcp-modern-tls": Case(
        [res("gcp:compute/sSLPolicy:SSLPolicy", minTlsVersion="TLS_1_2", profile="MODERN")],
        [res("gcp:compute/sSLPolicy:SSLPolicy", minTlsVersion="TLS_1_0", profile="COMPATIBLE")],
    ),
    "cloudrun-ingress-via-load-balancer": Case(
        [res("gcp:cloudrunv2/service:Service", ingress="INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER")],
        [res("gcp:cloudrunv2/service:Service")],
    ),
    "cloudrun-secrets-not-in-environment": Case(
        [
            res(
                "gcp:cloudrunv2/service:Service",
                template={
                    "containers": [
                        {
                            "envs": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {
                                    "name": "JWT_SECRET",
                                    "valueSource": {"secretKeyRef": {"secret": "s"}},
                                },
                            ]
                        }
                    ]
                },
            )
        ],
        [
            res(
                "gcp:cloudrunv2/workerPool:WorkerPool",
                template={"containers": [{"envs": [{"name": "JWT_SECRET", "value": "x"}]}]},
            )
        ],
    ),
    "gcp-required-labels": Case(
        [
            res(REDIS, labels={}),
            res("pulumi:providers:gcp", "gcp", defaultLabels=json.dumps(GCP_LABELS)),
            res(SQL, settings={"userLabels": GCP_LABELS}),
        ],
        [
            res(SQL, settings={"userLabels": {"environment": "production"}}),
            res(REDIS, labels={"service": "cache"}),
        ],
    ),
    "protect-stateful-in-production": Case(
        [res(RDS, protect=True), res("aws:ec2/vpc:Vpc")], [res(RDS), res(SQL)]
    ),
}


def test_every_rule_has_a_case_and_there_are_at_least_thirty() -> None:
    assert len(RULES) >= 30
    # The deploy-readiness family has its own cases (tests/infra/policy/test_readiness.py).
    assert sorted(CASES) == sorted(set(rules_by_name()) - readiness_names())
    for rule in RULES:
        assert rule.controls, rule.name


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_passes_and_fails(name: str) -> None:
    rule = rules_by_name()[name]
    case = CASES[name]
    ctx = Context(case.env, **case.extra)
    assert rule.evaluate(case.passing, ctx) == []
    violations = rule.evaluate(case.failing, ctx)
    assert violations, f"{name} found nothing wrong with {case.failing}"
    failing_urns = {r.urn for r in case.failing}
    assert {v.urn for v in violations} <= failing_urns
    assert all(v.message for v in violations)


@pytest.mark.parametrize(
    "name",
    [
        "rds-multi-az",
        "rds-deletion-protection",
        "elasticache-failover",
        "cloudsql-high-availability",
        "memorystore-high-availability",
        "protect-stateful-in-production",
    ],
)
def test_production_only_rules_pass_in_dev(name: str) -> None:
    case = CASES[name]
    dev = [
        ResourceView(r.urn.replace("production", "dev"), r.type, r.name, r.inputs, r.protect)
        for r in case.failing
    ]
    assert rules_by_name()[name].evaluate(dev, Context("dev")) == []


def test_unknown_values_from_a_live_preview_count_as_set() -> None:
    rule = rules_by_name()["rds-storage-encrypted"]
    assert (
        rule.evaluate(
            [res(RDS, storageEncrypted="[unknown]", kmsKeyId="[unknown]")], Context("production")
        )
        == []
    )


def test_live_preview_numbers_arrive_as_floats() -> None:
    rule = rules_by_name()["log-retention"]
    group = res("aws:cloudwatch/logGroup:LogGroup", retentionInDays=30.0)
    assert rule.evaluate([group], Context("production", 30)) == []
    sg = rules_by_name()["sg-no-world-ingress"]
    world = [{"cidrBlocks": ["0.0.0.0/0"], "fromPort": 443.0, "toPort": 443.0, "protocol": "tcp"}]
    lb_sg = res(SG, "alb-sg", ingress=world)
    assert sg.evaluate([lb_sg, res(LB, "alb", deps=(lb_sg.urn,))], Context("production")) == []
