"""The rendered GCP stack, per environment: each requirement of the GCP platform issue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.gcp.encryption import ROTATION_PERIOD
from infra.gcp.identities import WORKLOAD_ROLES
from infra.gcp.secrets import OPERATOR_SECRETS, REDIS_CA
from infra.manifests import SecretName, manifests
from infra.plans.produce.offline import render
from infra.plans.read.model import SECRET, Plan, Resource
from infra.settings import Cloud, environment

ENVIRONMENTS = ("dev", "staging", "production")


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {env: render(environment(env), Cloud.GCP) for env in ENVIRONMENTS}


def only(plan: Plan, type_: str) -> Resource:
    found = plan.of_type(type_)
    assert len(found) == 1, f"{plan.key}: {len(found)} of {type_}"
    return found[0]


def named(plan: Plan, type_: str, name: str) -> Resource:
    return next(r for r in plan.of_type(type_) if r.name == name)


def dependency(plan: Plan, resource: Resource, type_: str) -> Resource:
    by_urn = plan.by_urn()
    return next(by_urn[u] for u in resource.dependencies if by_urn[u].type == type_)


# -- network -------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_network_has_private_services_access_connector_and_nat(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    gcp = environment(env).gcp
    assert gcp is not None
    peering = only(plan, "gcp:servicenetworking/connection:Connection")
    assert peering.inputs["service"] == "servicenetworking.googleapis.com"
    connector = only(plan, "gcp:vpcaccess/connector:Connector")
    assert connector.inputs["ipCidrRange"] == gcp.connector_cidr
    nat = only(plan, "gcp:compute/routerNat:RouterNat")
    assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"
    vpc = only(plan, "gcp:cloudrunv2/service:Service").inputs["template"]["vpcAccess"]
    assert vpc["connector"].endswith(connector.inputs["name"])
    assert vpc["egress"] == "PRIVATE_RANGES_ONLY"
    # Worker pools take no connector: Direct VPC egress into the subnet.
    pool = only(plan, "gcp:cloudrunv2/workerPool:WorkerPool").inputs["template"]["vpcAccess"]
    assert "connector" not in pool
    [interface] = pool["networkInterfaces"]
    assert interface["subnetwork"].endswith(f"billing-{env}-{gcp.region}")
    assert pool["egress"] == "PRIVATE_RANGES_ONLY"


# -- encryption ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_kms_keys_rotate_within_90_days_and_encrypt_sql_secrets_registry(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    keys = plan.of_type("gcp:kms/cryptoKey:CryptoKey")
    assert {k.inputs["name"] for k in keys} == {
        f"billing-{env}-{purpose}" for purpose in ("database", "secrets", "registry")
    }
    for key in keys:
        assert int(key.inputs["rotationPeriod"].removesuffix("s")) <= 90 * 24 * 3600
    assert ROTATION_PERIOD == "7776000s"
    sql = named(plan, "gcp:sql/databaseInstance:DatabaseInstance", "database-instance")
    assert sql.inputs["encryptionKeyName"].endswith(f"/billing-{env}-database")
    registry = only(plan, "gcp:artifactregistry/repository:Repository")
    assert registry.inputs["kmsKeyName"].endswith(f"/billing-{env}-registry")
    for secret in plan.of_type("gcp:secretmanager/secret:Secret"):
        replicas = secret.inputs["replication"]["userManaged"]["replicas"]
        assert replicas
        for replica in replicas:
            kms = replica["customerManagedEncryption"]["kmsKeyName"]
            assert kms.endswith(f"/billing-{env}-secrets")
    # Each key is usable by its own service agent only.
    grants = plan.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    agents = {
        dependency(plan, g, "gcp:kms/cryptoKey:CryptoKey").inputs["name"]: dependency(
            plan, g, "gcp:projects/serviceIdentity:ServiceIdentity"
        ).inputs["service"]
        for g in grants
    }
    assert agents == {
        f"billing-{env}-database": "sqladmin.googleapis.com",
        f"billing-{env}-secrets": "secretmanager.googleapis.com",
        f"billing-{env}-registry": "artifactregistry.googleapis.com",
    }


# -- secrets and identities ----------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_a_secret_per_platform_secret_with_stack_owned_versions(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    secrets = {s.inputs["secretId"] for s in plan.of_type("gcp:secretmanager/secret:Secret")}
    expected = {f"billing-{env}-{name}" for name in [*SecretName, REDIS_CA]}
    assert secrets == expected
    # Every secret has a version before anything reads it, the operator's included.
    versions = plan.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    versioned = {
        dependency(plan, v, "gcp:secretmanager/secret:Secret").inputs["secretId"] for v in versions
    }
    assert versioned == expected
    assert all(v.inputs["secretData"] == SECRET for v in versions)
    operator = [
        v for v in versions if any(f"-{name}-version" in v.name for name in OPERATOR_SECRETS)
    ]
    assert len(operator) == len(OPERATOR_SECRETS)
    assert only(plan, "gcp:sql/user:User").inputs["password"] == SECRET


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_generated_secret_appears_in_plain_text(plans: dict[str, Plan], env: str) -> None:
    from infra.plans.produce.mocks import COMPUTED, NewResource, Target

    plan = plans[env]
    text = plan.to_json()
    target = Target(env, "gcp", "us-central1", f"example-billing-{env}")
    generated = [
        r
        for r in plan.resources
        if r.type in {"random:index/randomPassword:RandomPassword", "gcp:redis/instance:Instance"}
    ]
    assert len(generated) == 3
    for resource in generated:
        outputs = COMPUTED[resource.type](
            NewResource(resource.type, resource.name, resource.urn, resource.inputs, target)
        )
        value = outputs.get("result") or outputs["authString"]
        assert isinstance(value, str)
        assert len(value) >= 8
        assert value not in text


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_workload_has_its_own_account_and_only_its_own_secrets(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    accounts = {a.inputs["accountId"] for a in plan.of_type("gcp:serviceaccount/account:Account")}
    assert accounts == {f"billing-{env}-{w}" for w in ("api", "worker", "migrate")}
    granted: dict[str, set[str]] = {}
    for member in plan.of_type("gcp:secretmanager/secretIamMember:SecretIamMember"):
        assert member.inputs["role"] == "roles/secretmanager.secretAccessor"
        account = dependency(plan, member, "gcp:serviceaccount/account:Account")
        secret = dependency(plan, member, "gcp:secretmanager/secret:Secret")
        granted.setdefault(account.inputs["accountId"], set()).add(secret.inputs["secretId"])
    expected = {
        f"billing-{env}-{name}": {f"billing-{env}-{s}" for s in manifest.secret_names}
        for name, manifest in manifests().items()
    }
    expected[f"billing-{env}-migrate"] = {f"billing-{env}-{SecretName.DATABASE_PASSWORD}"}
    # The workloads that talk to Memorystore read its server CA too.
    for name in ("api", "worker"):
        expected[f"billing-{env}-{name}"].add(f"billing-{env}-{REDIS_CA}")
    assert granted == expected
    project_roles: dict[str, set[str]] = {}
    for member in plan.of_type("gcp:projects/iAMMember:IAMMember"):
        project_roles.setdefault(member.inputs["member"], set()).add(member.inputs["role"])
    assert len(project_roles) == 3
    assert all(roles == set(WORKLOAD_ROLES) for roles in project_roles.values())


# -- Cloud SQL -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "availability", "retention", "protected"),
    [
        ("dev", "ZONAL", 2, False),
        ("staging", "ZONAL", 8, False),
        ("production", "REGIONAL", 30, True),
    ],
)
def test_cloud_sql_per_environment(
    plans: dict[str, Plan], env: str, availability: str, retention: int, protected: bool
) -> None:
    sql = named(plans[env], "gcp:sql/databaseInstance:DatabaseInstance", "database-instance")
    inputs = sql.inputs
    settings = inputs["settings"]
    assert inputs["databaseVersion"] == "POSTGRES_15"
    assert settings["tier"] == environment(env).database.cloud_sql_tier
    assert settings["ipConfiguration"]["ipv4Enabled"] is False
    assert settings["ipConfiguration"]["privateNetwork"].endswith(f"/billing-{env}")
    assert settings["ipConfiguration"]["sslMode"] == "ENCRYPTED_ONLY"
    assert settings["availabilityType"] == availability
    backup = settings["backupConfiguration"]
    assert backup["enabled"] is True
    assert backup["pointInTimeRecoveryEnabled"] is True
    assert backup["backupRetentionSettings"]["retainedBackups"] == retention
    # Cloud SQL refuses retained backups not greater than the log retention.
    assert backup["transactionLogRetentionDays"] < retention
    assert settings["edition"] == "ENTERPRISE"
    assert backup["backupRetentionSettings"]["retentionUnit"] == "COUNT"
    assert settings["maintenanceWindow"]["day"] in range(1, 8)
    assert settings["insightsConfig"]["queryInsightsEnabled"] is True
    assert inputs["deletionProtection"] is protected
    assert settings["deletionProtectionEnabled"] is protected


# -- Memorystore ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "tier"), [("dev", "BASIC"), ("staging", "BASIC"), ("production", "STANDARD_HA")]
)
def test_memorystore_per_environment(plans: dict[str, Plan], env: str, tier: str) -> None:
    redis = only(plans[env], "gcp:redis/instance:Instance").inputs
    assert redis["redisVersion"].startswith("REDIS_7")
    assert redis["tier"] == tier
    assert redis["memorySizeGb"] == environment(env).cache.memorystore_size_gb
    assert redis["transitEncryptionMode"] == "SERVER_AUTHENTICATION"
    assert redis["authEnabled"] is True
    assert redis["connectMode"] == "PRIVATE_SERVICE_ACCESS"


# -- Artifact Registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_registry_mirrors_the_pinned_images_with_cleanup_policies(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    repository = only(plan, "gcp:artifactregistry/repository:Repository").inputs
    assert repository["format"] == "DOCKER"
    actions = {p["action"] for p in repository["cleanupPolicies"]}
    assert actions == {"KEEP", "DELETE"}
    assert repository["cleanupPolicyDryRun"] is False
    upstream = repository["remoteRepositoryConfig"]["dockerRepository"]["customRepository"]["uri"]
    assert upstream == "https://ghcr.io"
    pins = environment(env).pins.images
    api = only(plan, "gcp:cloudrunv2/service:Service").inputs["template"]["containers"][0]
    expected = f"us-central1-docker.pkg.dev/example-billing-{env}/billing-{env}/"
    assert api["image"] == expected + "example-org/billing-api@" + pins["api"].split("@")[1]
    grant = only(plan, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember").inputs
    assert grant["role"] == "roles/artifactregistry.reader"
    assert grant["member"].startswith("serviceAccount:service-")


# -- Cloud Run -----------------------------------------------------------------------------------


def _env_names(container: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    plain = {e["name"]: e["value"] for e in container["envs"] if "value" in e}
    secret = {
        e["name"]: e["valueSource"]["secretKeyRef"]["secret"]
        for e in container["envs"]
        if "valueSource" in e
    }
    return plain, secret


@pytest.mark.parametrize(
    ("env", "low", "high"), [("dev", 0, 3), ("staging", 1, 5), ("production", 2, 10)]
)
def test_api_service_scaling_ingress_and_contract(
    plans: dict[str, Plan], env: str, low: int, high: int
) -> None:
    service = only(plans[env], "gcp:cloudrunv2/service:Service").inputs
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    template = service["template"]
    assert template["scaling"] == {"minInstanceCount": low, "maxInstanceCount": high}
    assert template["serviceAccount"].startswith(f"billing-{env}-api@")
    manifest = manifests()["api"]
    container = template["containers"][0]
    assert container["ports"]["containerPort"] == manifest.port
    assert container["startupProbe"]["httpGet"]["path"] == manifest.health_path
    assert container["commands"] == manifest.command
    plain, secret = _env_names(container)
    assert set(plain) == set(manifest.environment)
    assert set(secret) == set(manifest.secrets)
    for env_name, secret_name in manifest.secrets.items():
        assert secret[env_name].endswith(f"/secrets/billing-{env}-{secret_name}")
    assert plain["BILLING_ENVIRONMENT"] == env
    assert plain["DATABASE_HOST"] == "10.128.0.3"
    assert plain["REDIS_TLS"] == "true"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_worker_pool_and_migrations_job(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    scaling = environment(env).services["worker"]
    pool = only(plan, "gcp:cloudrunv2/workerPool:WorkerPool").inputs
    assert pool["scaling"] == {"scalingMode": "MANUAL", "manualInstanceCount": scaling.min_tasks}
    worker = manifests()["worker"]
    plain, secret = _env_names(pool["template"]["containers"][0])
    assert set(plain) == set(worker.environment)
    assert set(secret) == set(worker.secrets)

    job = only(plan, "gcp:cloudrunv2/job:Job").inputs
    api = manifests()["api"]
    assert api.migrations is not None
    task = job["template"]["template"]
    assert task["serviceAccount"].startswith(f"billing-{env}-migrate@")
    container = task["containers"][0]
    assert container["commands"] == api.migrations.command
    plain, secret = _env_names(container)
    assert set(secret) == {"DATABASE_PASSWORD"}
    assert {"DATABASE_HOST", "DATABASE_NAME", "DATABASE_USER"} <= set(plain)
    assert job["template"]["parallelism"] == 1


# -- load balancer -------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_https_load_balancer_with_armor_tls_policy_and_redirect(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    domain = environment(env).gcp.domain  # type: ignore[union-attr]
    assert domain is not None
    neg = only(plan, "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup").inputs
    assert neg["networkEndpointType"] == "SERVERLESS"
    assert neg["cloudRun"]["service"] == f"billing-{env}-api"
    certificate = only(plan, "gcp:compute/managedSslCertificate:ManagedSslCertificate").inputs
    assert certificate["managed"]["domains"] == [domain]
    policy = only(plan, "gcp:compute/sSLPolicy:SSLPolicy").inputs
    assert policy["profile"] in {"MODERN", "RESTRICTED"}
    assert policy["minTlsVersion"] in {"TLS_1_2", "TLS_1_3"}
    proxy = only(plan, "gcp:compute/targetHttpsProxy:TargetHttpsProxy").inputs
    assert proxy["sslPolicy"].endswith(policy["name"])
    forwarding = plan.of_type("gcp:compute/globalForwardingRule:GlobalForwardingRule")
    rules = {r.inputs["portRange"]: r for r in forwarding}
    assert set(rules) == {"80", "443"}
    redirect = dependency(plan, rules["80"], "gcp:compute/targetHttpProxy:TargetHttpProxy")
    redirect_map = dependency(plan, redirect, "gcp:compute/uRLMap:URLMap").inputs
    assert redirect_map["defaultUrlRedirect"]["httpsRedirect"] is True

    backend = only(plan, "gcp:compute/backendService:BackendService").inputs
    assert backend["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    armor = only(plan, "gcp:compute/securityPolicy:SecurityPolicy")
    assert backend["securityPolicy"].endswith(armor.inputs["name"])
    expressions = " ".join(
        r["match"].get("expr", {}).get("expression", "") for r in armor.inputs["rules"]
    )
    for owasp in ("sqli", "xss", "lfi", "rce"):
        assert f"evaluatePreconfiguredWaf('{owasp}-" in expressions
    throttles = [r for r in armor.inputs["rules"] if r["action"] in {"throttle", "rate_based_ban"}]
    assert throttles
    assert throttles[0]["rateLimitOptions"]["exceedAction"] == "deny(429)"
    assert plan.outputs["load_balancer_url"] == f"https://{domain}"


def test_without_a_domain_the_balancer_serves_plain_http() -> None:
    dev = environment("dev")
    assert dev.gcp is not None
    bare = dev.model_copy(update={"gcp": dev.gcp.model_copy(update={"domain": None})})
    # The program deploys the settings it is handed.
    plan = render(bare, Cloud.GCP)
    assert not plan.of_type("gcp:compute/managedSslCertificate:ManagedSslCertificate")
    assert not plan.of_type("gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    rule = only(plan, "gcp:compute/globalForwardingRule:GlobalForwardingRule")
    assert rule.inputs["portRange"] == "80"
    proxy = dependency(plan, rule, "gcp:compute/targetHttpProxy:TargetHttpProxy")
    url_map = dependency(plan, proxy, "gcp:compute/uRLMap:URLMap").inputs
    assert "defaultService" in url_map
    assert plan.outputs["load_balancer_url"] == "http://203.0.113.10"
    uptime = only(plan, "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig").inputs
    assert uptime["httpCheck"]["useSsl"] is False


# -- monitoring ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_alert_policies_match_the_aws_alarms(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    channel = only(plan, "gcp:monitoring/notificationChannel:NotificationChannel").inputs
    assert channel["labels"] == {"email_address": environment(env).alarms.email}
    by_metric: dict[str, dict[str, Any]] = {}
    for policy in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy"):
        assert policy.inputs["notificationChannels"]
        if "-replica-" in policy.name:  # tested with the replicas
            continue
        threshold = policy.inputs["conditions"][0]["conditionThreshold"]
        metric = threshold["filter"].split('"')[1]
        by_metric[metric] = threshold
    assert set(by_metric) == {
        "run.googleapis.com/request_count",
        "run.googleapis.com/request_latencies",
        "run.googleapis.com/container/instance_count",
        "cloudsql.googleapis.com/database/cpu/utilization",
        "cloudsql.googleapis.com/database/disk/utilization",
        "cloudsql.googleapis.com/database/postgresql/num_backends",
        "redis.googleapis.com/stats/memory/usage_ratio",
        "redis.googleapis.com/stats/cpu_utilization_main_thread",
        "monitoring.googleapis.com/uptime_check/check_passed",
    }
    errors = by_metric["run.googleapis.com/request_count"]
    assert 'response_code_class="5xx"' in errors["filter"]
    assert "5xx" not in errors["denominatorFilter"]
    assert errors["thresholdValue"] == 0.01
    assert by_metric["run.googleapis.com/request_latencies"]["thresholdValue"] == 1000
    at_max = by_metric["run.googleapis.com/container/instance_count"]
    assert at_max["thresholdValue"] == environment(env).services["api"].max_tasks
    assert at_max["comparison"] == "COMPARISON_GE"
    assert by_metric["cloudsql.googleapis.com/database/disk/utilization"]["thresholdValue"] == 0.9

    uptime = only(plan, "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig").inputs
    assert uptime["httpCheck"]["path"] == manifests()["api"].health_path
    assert uptime["httpCheck"]["useSsl"] is True
    dashboard = json.loads(only(plan, "gcp:monitoring/dashboard:Dashboard").inputs["dashboardJson"])
    assert len(dashboard["mosaicLayout"]["tiles"]) >= 8


# -- outputs and protection ----------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_outputs(plans: dict[str, Plan], env: str) -> None:
    outputs = plans[env].outputs
    assert outputs["load_balancer_ip"] == "203.0.113.10"
    assert outputs["cloud_sql_connection_name"] == (
        f"example-billing-{env}:us-central1:billing-{env}-postgres"
    )
    assert outputs["redis_host"] == "10.128.1.4"
    assert outputs["service_urls"]["api"].startswith("https://")


def test_stateful_resources_are_protected_in_production_only(plans: dict[str, Plan]) -> None:
    from infra.plans.read.stateful import is_replica, is_stateful

    stateful_types = {
        "gcp:sql/databaseInstance:DatabaseInstance",
        "gcp:sql/database:Database",
        "gcp:redis/instance:Instance",
        "gcp:kms/keyRing:KeyRing",
        "gcp:kms/cryptoKey:CryptoKey",
        "gcp:secretmanager/secret:Secret",
        "gcp:secretmanager/secretVersion:SecretVersion",
        "gcp:artifactregistry/repository:Repository",
    }
    for env, plan in plans.items():
        stateful = [r for r in plan.resources if is_stateful(r.type)]
        assert {r.type for r in stateful} == stateful_types
        for resource in stateful:
            # Read replicas are rebuilt from their source: never protected.
            expected = env == "production" and not is_replica(resource.type, resource.inputs)
            assert resource.protect is expected, (env, resource.urn)
