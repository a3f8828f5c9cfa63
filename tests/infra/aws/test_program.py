"""The AWS platform per environment: every component the seeds name, sized as they say."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.manifests import manifests
from infra.plans.produce.mocks import ID_PREFIXES, digest
from infra.plans.produce.offline import render
from infra.plans.read.model import SECRET, Plan, Resource
from infra.settings import Cloud, environment

ENVIRONMENTS = ("dev", "staging", "production")

SG = "aws:ec2/securityGroup:SecurityGroup"
RDS = "aws:rds/instance:Instance"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {env: render(environment(env), Cloud.AWS) for env in ENVIRONMENTS}


def of_type(plan: Plan, type_: str) -> list[Resource]:
    return plan.of_type(type_)


def one(plan: Plan, type_: str, name: str | None = None) -> Resource:
    found = [r for r in plan.of_type(type_) if name is None or r.name == name]
    assert len(found) == 1, f"{type_} {name}: {[r.name for r in found]}"
    return found[0]


def resource_id(resource: Resource) -> str:
    return f"{ID_PREFIXES[resource.type]}-{digest(resource.urn, 17)}"


def containers(task: Resource) -> list[dict[str, Any]]:
    parsed: list[dict[str, Any]] = json.loads(task.inputs["containerDefinitions"])
    return parsed


# -- network --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "zones", "nats"), [("dev", 2, 1), ("staging", 2, 1), ("production", 3, 3)]
)
def test_network_spans_the_zones_with_nat_per_environment(
    plans: dict[str, Plan], env: str, zones: int, nats: int
) -> None:
    plan = plans[env]
    assert len(of_type(plan, "aws:ec2/subnet:Subnet")) == 3 * zones
    assert (
        len({s.inputs["availabilityZone"] for s in of_type(plan, "aws:ec2/subnet:Subnet")}) == zones
    )
    assert len(of_type(plan, "aws:ec2/natGateway:NatGateway")) == nats
    assert len(of_type(plan, "aws:ec2/flowLog:FlowLog")) == 1


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_vpc_endpoints_for_s3_ecr_secrets_and_logs(plans: dict[str, Plan], env: str) -> None:
    endpoints = of_type(plans[env], "aws:ec2/vpcEndpoint:VpcEndpoint")
    by_service = {
        e.inputs["serviceName"].rsplit(".", 1)[-1]
        if "ecr" not in e.inputs["serviceName"]
        else e.inputs["serviceName"].split("us-east-1.")[1]: e
        for e in endpoints
    }
    assert set(by_service) == {"s3", "ecr.api", "ecr.dkr", "secretsmanager", "logs"}
    assert by_service["s3"].inputs["vpcEndpointType"] == "Gateway"
    for name in ("ecr.api", "ecr.dkr", "secretsmanager", "logs"):
        assert by_service[name].inputs["vpcEndpointType"] == "Interface"
        assert by_service[name].inputs["privateDnsEnabled"] is True


def test_flow_logs_are_encrypted_with_the_logs_key(plans: dict[str, Plan]) -> None:
    plan = plans["production"]
    flow_logs = one(plan, "aws:cloudwatch/logGroup:LogGroup", "network-flow-logs")
    assert flow_logs.inputs["kmsKeyId"].startswith("arn:aws:kms:")


# -- security groups ------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_security_groups_allow_only_the_next_hop(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    groups = {
        r.name.removeprefix("firewall-"): r
        for r in of_type(plan, SG)
        if r.name.startswith("firewall-")
    }
    alb, api, worker = groups["alb"], groups["service-api"], groups["service-worker"]
    service_ids = sorted([resource_id(api), resource_id(worker)])

    assert {
        (i["fromPort"], i["toPort"], tuple(i["cidrBlocks"])) for i in alb.inputs["ingress"]
    } == {(443, 443, ("0.0.0.0/0",)), (80, 80, ("0.0.0.0/0",))}
    port = manifests()["api"].port
    [api_in] = api.inputs["ingress"]
    assert (api_in["fromPort"], api_in["toPort"]) == (port, port)
    assert api_in["securityGroups"] == [resource_id(alb)]
    assert "cidrBlocks" not in api_in
    assert worker.inputs.get("ingress", []) == []

    [db_in] = groups["database"].inputs["ingress"]
    assert (db_in["fromPort"], db_in["toPort"]) == (5432, 5432)
    assert sorted(db_in["securityGroups"]) == service_ids
    [cache_in] = groups["cache"].inputs["ingress"]
    assert (cache_in["fromPort"], cache_in["toPort"]) == (6379, 6379)
    assert sorted(cache_in["securityGroups"]) == service_ids
    assert groups["database"].inputs.get("egress", []) == []

    # The load balancer is the only thing the internet reaches.
    for group in of_type(plan, SG):
        for rule in group.inputs.get("ingress", []):
            if "0.0.0.0/0" in rule.get("cidrBlocks", []):
                assert group is alb


# -- keys and secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_keys_rotate_and_secrets_use_the_data_key(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    keys = of_type(plan, "aws:kms/key:Key")
    # Data and logs; production adds the key of its backup copies in the second region.
    assert len([k for k in keys if k.name.startswith("keys-")]) == 2
    assert all(k.inputs["enableKeyRotation"] is True for k in keys)
    secrets = of_type(plan, "aws:secretsmanager/secret:Secret")
    platform = [s for s in secrets if s.inputs["name"].startswith(f"billing/{env}/")]
    assert {s.inputs["name"].rsplit("/", 1)[1] for s in platform} == {
        "database-password",
        "redis-auth-token",
        "jwt-secret",
        "stripe-api-key",
        "stripe-webhook-secret",
    }
    data_key = one(plan, RDS, "database-instance").inputs["kmsKeyId"]
    assert data_key.startswith("arn:aws:kms:")
    assert all(s.inputs["kmsKeyId"] == data_key for s in secrets)
    logs_key = json.loads(one(plan, "aws:kms/key:Key", "keys-logs").inputs["policy"])
    assert any(
        st["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
        for st in logs_key["Statement"]
    )


# -- database -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "multi_az", "backups", "instance_class", "protected"),
    [
        ("dev", False, 1, "db.t3.medium", False),
        ("staging", False, 7, "db.t3.large", False),
        ("production", True, 30, "db.r6g.xlarge", True),
    ],
)
def test_database_sizing_and_backups(
    plans: dict[str, Plan],
    env: str,
    multi_az: bool,
    backups: int,
    instance_class: str,
    protected: bool,
) -> None:
    db = one(plans[env], RDS, "database-instance").inputs
    assert db["engine"] == "postgres"
    assert db["engineVersion"].split(".")[0] == "15"
    assert db["instanceClass"] == instance_class
    assert db["multiAz"] is multi_az
    assert db["backupRetentionPeriod"] == backups
    assert db["backupWindow"] == "03:00-04:00"
    assert db["maintenanceWindow"] == "mon:04:00-mon:05:00"
    assert db["deletionProtection"] is protected
    assert db["skipFinalSnapshot"] is not protected
    assert ("finalSnapshotIdentifier" in db) is protected
    assert db["deleteAutomatedBackups"] is False


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_database_is_private_encrypted_and_observed(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    db = one(plan, RDS, "database-instance").inputs
    assert db["storageEncrypted"] is True
    assert db["kmsKeyId"].startswith("arn:aws:kms:")
    assert db["publiclyAccessible"] is False
    assert db["performanceInsightsEnabled"] is True
    assert db["monitoringInterval"] > 0
    assert db["monitoringRoleArn"].startswith("arn:aws:iam::")
    assert db["maxAllocatedStorage"] > db["allocatedStorage"]
    assert db["password"] == SECRET
    parameters = {
        p["name"]: p["value"]
        for p in one(plan, "aws:rds/parameterGroup:ParameterGroup").inputs["parameters"]
    }
    assert parameters["rds.force_ssl"] == "1"
    assert parameters["log_connections"] == "1"
    assert "log_min_duration_statement" in parameters
    assert (
        db["parameterGroupName"]
        == one(plan, "aws:rds/parameterGroup:ParameterGroup").inputs["name"]
    )


# -- cache ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "nodes", "failover"), [("dev", 1, False), ("staging", 2, True), ("production", 3, True)]
)
def test_cache_is_encrypted_replicated_and_snapshotted(
    plans: dict[str, Plan], env: str, nodes: int, failover: bool
) -> None:
    redis = one(plans[env], REDIS).inputs
    assert redis["engineVersion"].startswith("7")
    assert redis["numCacheClusters"] == nodes
    assert redis["automaticFailoverEnabled"] is failover
    assert redis["multiAzEnabled"] is failover
    assert redis["atRestEncryptionEnabled"] is True
    assert redis["kmsKeyId"].startswith("arn:aws:kms:")
    assert redis["transitEncryptionEnabled"] is True
    assert redis["authToken"] == SECRET
    assert redis["snapshotRetentionLimit"] == 7
    assert redis["snapshotWindow"] == "03:00-05:00"


# -- containers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_images_come_through_the_environments_pull_through_cache(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    settings = environment(env)
    rule = one(plan, "aws:ecr/pullThroughCacheRule:PullThroughCacheRule").inputs
    assert rule["ecrRepositoryPrefix"] == f"billing-{env}"
    assert rule["upstreamRegistryUrl"] == "ghcr.io"
    assert rule["credentialArn"].split(":secret:")[1].startswith("ecr-pullthroughcache/")
    template = one(plan, "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate").inputs
    assert template["appliedFors"] == ["PULL_THROUGH_CACHE"]
    assert json.loads(template["lifecyclePolicy"])["rules"]
    assert of_type(plan, "aws:ecr/repository:Repository") == []
    registry = f"111111111111.dkr.ecr.us-east-1.amazonaws.com/billing-{env}/".replace(
        "111111111111",
        settings.aws.account_id,  # type: ignore[union-attr]
    )
    for service, image in plan.outputs["service_images"].items():
        assert image.startswith(registry), image
        assert image.endswith(settings.pins.images[service].split("@")[1])


@pytest.mark.parametrize(
    ("env", "low", "high"), [("dev", 1, 3), ("staging", 1, 5), ("production", 2, 10)]
)
def test_services_scale_on_cpu_and_memory_within_bounds(
    plans: dict[str, Plan], env: str, low: int, high: int
) -> None:
    plan = plans[env]
    targets = of_type(plan, "aws:appautoscaling/target:Target")
    assert len(targets) == len(manifests())
    for target in targets:
        assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (low, high)
    for service in of_type(plan, "aws:ecs/service:Service"):
        assert service.inputs["desiredCount"] == low
        assert service.inputs["networkConfiguration"]["assignPublicIp"] is False
    policies = of_type(plan, "aws:appautoscaling/policy:Policy")
    found = {
        (
            p.inputs["targetTrackingScalingPolicyConfiguration"]["predefinedMetricSpecification"][
                "predefinedMetricType"
            ],
            p.inputs["targetTrackingScalingPolicyConfiguration"]["targetValue"],
        )
        for p in policies
    }
    assert found == {
        ("ECSServiceAverageCPUUtilization", 70),
        ("ECSServiceAverageMemoryUtilization", 80),
    }
    for policy in policies:
        config = policy.inputs["targetTrackingScalingPolicyConfiguration"]
        assert (config["scaleOutCooldown"], config["scaleInCooldown"]) == (60, 300)


def test_cluster_has_container_insights(plans: dict[str, Plan]) -> None:
    cluster = one(plans["dev"], "aws:ecs/cluster:Cluster")
    assert {"name": "containerInsights", "value": "enabled"} in cluster.inputs["settings"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_task_definitions_follow_the_manifests(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    settings = environment(env)
    tasks = {t.name.removeprefix("compute-").removesuffix("-task"): t for t in of_type(plan, TASK)}
    assert set(tasks) == {*manifests(), "migrate"}
    for service, manifest in manifests().items():
        [container] = containers(tasks[service])
        assert container["image"] == plan.outputs["service_images"][service]
        assert container["image"].endswith(settings.pins.images[service].split(":0.1.0")[1])
        assert container["command"] == manifest.command
        # Every declared variable but the Redis CA file: ElastiCache's certificate chains to a
        # public CA, so the value is empty and an empty variable is left out (Fargate drops it).
        assert {e["name"] for e in container["environment"]} == set(manifest.environment) - {
            "REDIS_CA_FILE"
        }
        assert {s["name"] for s in container["secrets"]} == set(manifest.secrets)
        for secret in container["secrets"]:
            assert secret["valueFrom"].startswith("arn:aws:secretsmanager:")
        assert container["logConfiguration"]["logDriver"] == "awslogs"
        if manifest.port is not None:
            assert container["portMappings"] == [
                {"containerPort": manifest.port, "protocol": "tcp"}
            ]
            assert manifest.health_path is not None
            assert manifest.health_path in " ".join(container["healthCheck"]["command"])
        else:
            assert "portMappings" not in container
        scaling = settings.services[service]
        assert tasks[service].inputs["cpu"] == str(scaling.cpu or manifest.cpu)
        assert tasks[service].inputs["memory"] == str(scaling.memory or manifest.memory)
    [api] = containers(tasks["api"])
    env_values = {e["name"]: e["value"] for e in api["environment"]}
    assert env_values["BILLING_ENVIRONMENT"] == env
    assert env_values["REDIS_TLS"] == "true"
    assert env_values["DATABASE_HOST"].endswith(".rds.amazonaws.com")
    assert env_values["REDIS_HOST"].endswith(".cache.amazonaws.com")
    # Secrets are only ever references.
    assert not set(api["environment"][0]) - {"name", "value"}
    assert not {s["name"] for s in api["secrets"]} & set(env_values)


def test_migration_task_runs_alembic_with_the_api_image(plans: dict[str, Plan]) -> None:
    plan = plans["production"]
    [migration] = containers(one(plan, TASK, "compute-migrate-task"))
    api = manifests()["api"]
    assert api.migrations is not None
    assert migration["command"] == api.migrations.command
    assert migration["image"] == plan.outputs["service_images"]["api"]
    assert {s["name"] for s in migration["secrets"]} == set(api.secrets)
    assert "portMappings" not in migration
    assert "migration_task_definition_arn" in plan.outputs


@pytest.mark.parametrize(("env", "days"), [("dev", 7), ("staging", 14), ("production", 30)])
def test_service_logs_retention_and_encryption(plans: dict[str, Plan], env: str, days: int) -> None:
    groups = [
        g
        for g in of_type(plans[env], "aws:cloudwatch/logGroup:LogGroup")
        if g.inputs["name"].startswith("/ecs/")
    ]
    assert len(groups) == len(manifests())
    for group in groups:
        assert group.inputs["retentionInDays"] == days
        assert group.inputs["kmsKeyId"].startswith("arn:aws:kms:")


def test_execution_roles_read_only_their_own_secrets(plans: dict[str, Plan]) -> None:
    plan = plans["staging"]
    for service, manifest in manifests().items():
        policy = json.loads(
            one(
                plan, "aws:iam/rolePolicy:RolePolicy", f"compute-{service}-execution-policy"
            ).inputs["policy"]
        )
        [read] = [s for s in policy["Statement"] if s["Sid"] == "ReadOwnSecrets"]
        names = {
            arn.split(":secret:billing/staging/")[1].rsplit("-", 1)[0] for arn in read["Resource"]
        }
        assert names == {s.value for s in manifest.secret_names}
    worker = manifests()["worker"]
    assert "jwt-secret" not in {s.value for s in worker.secret_names}


# -- edge -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "protected"), [("dev", False), ("staging", False), ("production", True)]
)
def test_load_balancer_tls_redirect_logs_and_headers(
    plans: dict[str, Plan], env: str, protected: bool
) -> None:
    plan = plans[env]
    alb = one(plan, "aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["dropInvalidHeaderFields"] is True
    assert alb["enableDeletionProtection"] is protected
    assert alb["accessLogs"]["enabled"] is True
    assert alb["accessLogs"]["bucket"] == plan.outputs["alb_logs_bucket"]
    https = one(plan, "aws:lb/listener:Listener", "edge-https").inputs
    assert https["protocol"] == "HTTPS"
    assert https["sslPolicy"].startswith("ELBSecurityPolicy-TLS13-")
    # The certificate the listener serves is the one the stack validated, and it waits for that.
    validation = one(plan, "aws:acm/certificateValidation:CertificateValidation")
    assert https["certificateArn"] == validation.inputs["certificateArn"]
    assert validation.urn in one(plan, "aws:lb/listener:Listener", "edge-https").dependencies
    http = one(plan, "aws:lb/listener:Listener", "edge-http-redirect").inputs
    [redirect] = http["defaultActions"]
    assert redirect["type"] == "redirect"
    assert redirect["redirect"]["protocol"] == "HTTPS"
    assert redirect["redirect"]["statusCode"] == "HTTP_301"
    target_group = one(plan, "aws:lb/targetGroup:TargetGroup", "edge-api-tg").inputs
    assert target_group["healthCheck"]["path"] == manifests()["api"].health_path
    assert target_group["port"] == manifests()["api"].port


def test_waf_protects_the_load_balancer(plans: dict[str, Plan]) -> None:
    plan = plans["dev"]
    acl = one(plan, "aws:wafv2/webAcl:WebAcl")
    groups = {
        r["statement"]["managedRuleGroupStatement"]["name"]
        for r in acl.inputs["rules"]
        if "managedRuleGroupStatement" in r["statement"]
    }
    assert groups == {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"}
    [rate] = [r for r in acl.inputs["rules"] if "rateBasedStatement" in r["statement"]]
    assert rate["action"] == {"block": {}}
    association = one(plan, "aws:wafv2/webAclAssociation:WebAclAssociation")
    assert one(plan, "aws:lb/loadBalancer:LoadBalancer").urn in association.dependencies
    logging = one(plan, "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration")
    assert logging.inputs["logDestinationConfigs"][0].endswith(
        ":log-group:aws-waf-logs-billing-dev"
    )


# -- storage and frontend -------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_bucket_is_private_versioned_encrypted_and_expiring(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    buckets = {b.urn for b in of_type(plan, "aws:s3/bucket:Bucket")}
    assert len(buckets) == 3  # backups, ALB logs, frontend

    def covered(type_: str) -> set[str]:
        return {d for r in of_type(plan, type_) for d in r.dependencies if d in buckets}

    for blocks in of_type(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"):
        assert all(
            blocks.inputs[k] is True
            for k in (
                "blockPublicAcls",
                "blockPublicPolicy",
                "ignorePublicAcls",
                "restrictPublicBuckets",
            )
        )
    for versioning in of_type(plan, "aws:s3/bucketVersioning:BucketVersioning"):
        assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
    for type_ in (
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        "aws:s3/bucketPolicy:BucketPolicy",
    ):
        assert covered(type_) == buckets, type_
    backups = [
        r
        for r in of_type(
            plan,
            "aws:s3/bucketServerSideEncryptionConfiguration:"
            "BucketServerSideEncryptionConfiguration",
        )
        if r.name == "backups-encryption"
    ]
    [rule] = backups[0].inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    for policy in of_type(plan, "aws:s3/bucketPolicy:BucketPolicy"):
        statements = json.loads(policy.inputs["policy"])["Statement"]
        assert any(s["Sid"] == "DenyInsecureTransport" for s in statements)


def test_frontend_is_private_behind_cloudfront(plans: dict[str, Plan]) -> None:
    plan = plans["staging"]
    cdn = one(plan, "aws:cloudfront/distribution:Distribution").inputs
    assert cdn["defaultCacheBehavior"]["viewerProtocolPolicy"] in {
        "redirect-to-https",
        "https-only",
    }
    assert cdn["defaultRootObject"] == "index.html"
    errors = {
        (e["errorCode"], e["responseCode"], e["responsePagePath"])
        for e in cdn["customErrorResponses"]
    }
    assert errors == {(403, 200, "/index.html"), (404, 200, "/index.html")}
    [origin] = cdn["origins"]
    assert origin["originAccessControlId"]
    assert (
        origin["domainName"] == "billing-staging-frontend-222222222222.s3.us-east-1.amazonaws.com"
    )
    access = one(plan, "aws:cloudfront/originAccessControl:OriginAccessControl").inputs
    assert access["signingBehavior"] == "always"
    policy = json.loads(
        one(plan, "aws:s3/bucketPolicy:BucketPolicy", "frontend-site-policy").inputs["policy"]
    )
    [read] = [s for s in policy["Statement"] if s["Sid"] == "CloudFrontReads"]
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert read["Condition"]["StringEquals"]["AWS:SourceArn"].startswith("arn:aws:cloudfront::")


# -- observability, DNS, outputs ------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_alarms_cover_every_layer_and_notify_topics(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    alarms = of_type(plan, ALARM)
    metrics = {(a.inputs.get("namespace"), a.inputs.get("metricName")) for a in alarms}
    assert {
        ("AWS/ApplicationELB", "TargetResponseTime"),
        ("AWS/RDS", "CPUUtilization"),
        ("AWS/RDS", "FreeStorageSpace"),
        ("AWS/RDS", "DatabaseConnections"),
        ("AWS/ElastiCache", "EngineCPUUtilization"),
        ("AWS/ElastiCache", "Evictions"),
        ("AWS/ECS", "CPUUtilization"),
        ("AWS/ECS", "MemoryUtilization"),
    } <= metrics
    [rate] = [a for a in alarms if a.name == "observability-alb-5xx-rate"]
    used = {q["metric"]["metricName"] for q in rate.inputs["metricQueries"] if "metric" in q}
    assert {"HTTPCode_Target_5XX_Count", "RequestCount"} <= used
    topics = {t.inputs["name"].rsplit("-", 1)[1]: t for t in of_type(plan, "aws:sns/topic:Topic")}
    assert set(topics) == {"critical", "warning", "info"}
    assert all(t.inputs["kmsMasterKeyId"].startswith("arn:aws:kms:") for t in topics.values())
    for alarm in alarms:
        [action] = alarm.inputs["alarmActions"]
        assert action.startswith("arn:aws:sns:")
    assert len(of_type(plan, "aws:cloudwatch/dashboard:Dashboard")) == 1
    redis_nodes = environment(env).cache.nodes
    assert len([a for a in alarms if a.inputs.get("metricName") == "Evictions"]) == redis_nodes


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dns_record_certificate_and_health_check_for_the_domain(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    aws_settings = environment(env).aws
    assert aws_settings is not None
    record = one(plan, "aws:route53/record:Record", "dns-api").inputs
    assert record["name"] == aws_settings.domain
    assert record["zoneId"] == aws_settings.hosted_zone_id
    assert record["aliases"][0]["evaluateTargetHealth"] is True
    certificate = one(plan, "aws:acm/certificate:Certificate").inputs
    assert certificate["domainName"] == aws_settings.domain
    assert certificate["validationMethod"] == "DNS"
    validation = one(plan, "aws:route53/record:Record", "certificate-validation").inputs
    assert validation["zoneId"] == aws_settings.hosted_zone_id
    assert validation["type"] == "CNAME"
    check = one(plan, "aws:route53/healthCheck:HealthCheck").inputs
    assert check["resourcePath"] == manifests()["api"].health_path
    assert plan.outputs["api_url"] == f"https://{aws_settings.domain}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_outputs_the_seeds_list(plans: dict[str, Plan], env: str) -> None:
    outputs = plans[env].outputs
    for key in (
        "vpc_id",
        "alb_dns_name",
        "rds_endpoint",
        "redis_endpoint",
        "ecs_cluster_name",
        "frontend_bucket_name",
        "frontend_distribution_id",
        "api_url",
        "service_images",
    ):
        assert outputs.get(key), key
    assert outputs["vpc_id"].startswith("vpc-")
    assert outputs["rds_endpoint"].endswith(":5432")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_alb_and_endpoints_reach_only_the_app_subnets(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    app_cidrs = sorted(
        s.inputs["cidrBlock"]
        for s in of_type(plan, "aws:ec2/subnet:Subnet")
        if s.name.startswith("network-app-")
    )
    alb = one(plan, SG, "firewall-alb")
    [egress] = alb.inputs["egress"]
    assert sorted(egress["cidrBlocks"]) == app_cidrs
    assert egress["fromPort"] == egress["toPort"] == manifests()["api"].port
    endpoints = one(plan, SG, "network-endpoints-sg")
    [ingress] = endpoints.inputs["ingress"]
    assert (ingress["fromPort"], sorted(ingress["cidrBlocks"])) == (443, app_cidrs)


def test_only_the_load_balancer_writes_access_logs(plans: dict[str, Plan]) -> None:
    plan = plans["production"]
    policy = json.loads(
        one(plan, "aws:s3/bucketPolicy:BucketPolicy", "edge-access-logs-policy").inputs["policy"]
    )
    [write] = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert write["Action"] == "s3:PutObject"
    assert write["Principal"]["AWS"].startswith("arn:aws:iam::")
    assert write["Resource"].endswith("/alb/AWSLogs/333333333333/*")
