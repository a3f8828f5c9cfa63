"""Every AWS policy rule against resources that pass and resources that fail."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.policy.rules import Context, ResourceView
from infra.policy.rules.aws import AWS
from tests.infra.policy.rules.cases import Case, check_case, in_dev, res, urn_of

RDS = "aws:rds/instance:Instance"
CACHE = "aws:elasticache/replicationGroup:ReplicationGroup"
LISTENER = "aws:lb/listener:Listener"
LB = "aws:lb/loadBalancer:LoadBalancer"
BUCKET = "aws:s3/bucket:Bucket"
SG = "aws:ec2/securityGroup:SecurityGroup"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
AWS_TAGS = {
    "environment": "production",
    "service": "api",
    "cost-centre": "c",
    "managed-by": "pulumi",
    "repository": "o/r",
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
}

RULES = {rule.name: rule for rule in AWS.rules}


def test_every_aws_rule_has_a_case() -> None:
    assert sorted(CASES) == sorted(RULES)
    assert all(rule.clouds == ("aws",) for rule in AWS.rules)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_passes_and_fails(name: str) -> None:
    check_case(RULES[name], CASES[name])


@pytest.mark.parametrize(
    "name",
    ["rds-multi-az", "rds-deletion-protection", "elasticache-failover"],
)
def test_production_only_rules_pass_in_dev(name: str) -> None:
    assert RULES[name].evaluate(in_dev(CASES[name].failing), Context("dev")) == []


def test_unknown_values_from_a_live_preview_count_as_set() -> None:
    unknown = [res(RDS, storageEncrypted="[unknown]", kmsKeyId="[unknown]")]
    assert RULES["rds-storage-encrypted"].evaluate(unknown, Context("production")) == []


def test_live_preview_numbers_arrive_as_floats() -> None:
    group = res("aws:cloudwatch/logGroup:LogGroup", retentionInDays=30.0)
    assert RULES["log-retention"].evaluate([group], Context("production", 30)) == []
    world = [{"cidrBlocks": ["0.0.0.0/0"], "fromPort": 443.0, "toPort": 443.0, "protocol": "tcp"}]
    lb_sg = res(SG, "alb-sg", ingress=world)
    stack = [lb_sg, res(LB, "alb", deps=(lb_sg.urn,))]
    assert RULES["sg-no-world-ingress"].evaluate(stack, Context("production")) == []
