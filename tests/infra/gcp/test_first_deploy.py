"""What a first `pulumi up` of GCP would hit, each rendered offline (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.bootstrap.gcp import ROLES
from infra.gcp.compute import REDIS_CA_PATH
from infra.gcp.database import backup_retention
from infra.gcp.google_apis import API_OF_MODULE, ENABLES_APIS
from infra.gcp.secrets import REDIS_CA
from infra.plans.produce.offline import render
from infra.plans.read.model import Plan, Resource
from infra.settings import Cloud, SettingsError, environment, load_environment

ENVIRONMENTS = ("dev", "staging", "production")
RUN = (
    "gcp:cloudrunv2/service:Service",
    "gcp:cloudrunv2/workerPool:WorkerPool",
    "gcp:cloudrunv2/job:Job",
)


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {env: render(environment(env), Cloud.GCP) for env in ENVIRONMENTS}


def _one(plan: Plan, type_: str) -> Resource:
    [found] = plan.of_type(type_)
    return found


def _upstream(plan: Plan, resource: Resource) -> set[str]:
    """Every URN ``resource`` waits for: dependencies, transitively."""
    by_urn = plan.by_urn()
    seen: set[str] = set()
    todo = list(resource.dependencies)
    while todo:
        urn = todo.pop()
        if urn in seen:
            continue
        seen.add(urn)
        if urn in by_urn:
            todo += by_urn[urn].dependencies
    return seen


def _containers(resource: Resource) -> list[dict[str, object]]:
    template = resource.inputs["template"]
    if resource.type == "gcp:cloudrunv2/job:Job":
        template = template["template"]
    containers: list[dict[str, object]] = template["containers"]
    return containers


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_resource_waits_for_its_api(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    enabled = {s.inputs["service"]: s.urn for s in plan.of_type("gcp:projects/service:Service")}
    assert set(API_OF_MODULE.values()) <= set(enabled)
    assert all(
        s.inputs["disableOnDestroy"] is False for s in plan.of_type("gcp:projects/service:Service")
    )
    providers = {r.name: r for r in plan.resources if r.type == "pulumi:providers:gcp"}
    assert set(enabled.values()) <= set(providers["gcp"].dependencies)
    for resource in plan.resources:
        if not resource.type.startswith("gcp:") or resource.type in ENABLES_APIS:
            continue
        assert resource.provider.startswith(providers["gcp"].urn), resource.urn
        module = resource.type.split(":")[1].split("/")[0]
        assert module in API_OF_MODULE, resource.type


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_secret_a_workload_reads_has_a_version_first(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    secrets = {s.urn: s for s in plan.of_type("gcp:secretmanager/secret:Secret")}
    versions = plan.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    versioned = {d for v in versions for d in v.dependencies if d in secrets}
    assert versioned == set(secrets)
    secret_by_id = {
        f"projects/example-billing-{env}/secrets/{s.inputs['secretId']}": s
        for s in secrets.values()
    }
    for workload in (r for r in plan.resources if r.type in RUN):
        before = _upstream(plan, workload)
        for container in _containers(workload):
            for entry in container.get("envs", []):  # type: ignore[attr-defined]
                reference = entry.get("valueSource", {}).get("secretKeyRef")
                if reference is None:
                    continue
                secret = next(
                    s
                    for i, s in secret_by_id.items()
                    if reference["secret"].endswith(i.rsplit("/", 1)[1])
                )
                version = next(v for v in versions if secret.urn in v.dependencies)
                assert version.urn in before, (workload.name, entry["name"])


@pytest.mark.parametrize(("days", "log", "kept"), [(1, 1, 2), (7, 7, 8), (30, 7, 30), (8, 7, 8)])
def test_retained_backups_exceed_the_log_retention(days: int, log: int, kept: int) -> None:
    assert backup_retention(days) == (log, kept)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_cloud_sql_backups_and_edition_are_accepted(plans: dict[str, Plan], env: str) -> None:
    for sql in plans[env].of_type("gcp:sql/databaseInstance:DatabaseInstance"):
        settings = sql.inputs["settings"]
        assert settings["edition"] == "ENTERPRISE"
        backup = settings["backupConfiguration"]
        if not backup.get("enabled"):
            continue
        assert 1 <= backup["transactionLogRetentionDays"] <= 7
        assert (
            backup["backupRetentionSettings"]["retainedBackups"]
            > backup["transactionLogRetentionDays"]
        )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_worker_runs_as_a_manually_scaled_pool_with_direct_vpc_egress(
    plans: dict[str, Plan], env: str
) -> None:
    pool = _one(plans[env], "gcp:cloudrunv2/workerPool:WorkerPool").inputs
    assert pool["scaling"]["scalingMode"] == "MANUAL"
    assert pool["scaling"]["manualInstanceCount"] >= 1
    access = pool["template"]["vpcAccess"]
    assert "connector" not in access
    assert access["networkInterfaces"][0]["network"].endswith(f"/billing-{env}")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_workloads_get_the_memorystore_ca_as_a_file(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    redis = _one(plan, "gcp:redis/instance:Instance")
    [ca_secret] = [
        s
        for s in plan.of_type("gcp:secretmanager/secret:Secret")
        if s.inputs["secretId"] == f"billing-{env}-{REDIS_CA}"
    ]
    [ca_version] = [
        v
        for v in plan.of_type("gcp:secretmanager/secretVersion:SecretVersion")
        if ca_secret.urn in v.dependencies
    ]
    # The version's value is the instance's server CA: it waits for the instance.
    assert redis.urn in ca_version.dependencies
    for type_ in ("gcp:cloudrunv2/service:Service", "gcp:cloudrunv2/workerPool:WorkerPool"):
        workload = _one(plan, type_).inputs["template"]
        [volume] = workload["volumes"]
        assert volume["secret"]["items"] == [{"path": "ca.pem", "version": "latest"}]
        [mount] = workload["containers"][0]["volumeMounts"]
        assert f"{mount['mountPath']}/ca.pem" == REDIS_CA_PATH
        # The services read the file's path from the manifests' REDIS_CA_FILE and verify
        # Memorystore's certificate against it (services/tests/test_redis_tls.py).
        env_values = {e["name"]: e.get("value") for e in workload["containers"][0]["envs"]}
        assert env_values["REDIS_CA_FILE"] == REDIS_CA_PATH


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_managed_certificate_domain_points_at_the_load_balancer(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    settings = environment(env).gcp
    assert settings is not None
    record = _one(plan, "gcp:dns/recordSet:RecordSet")
    [address] = [
        a
        for a in plan.of_type("gcp:compute/globalAddress:GlobalAddress")
        if a.name == "edge-address"
    ]
    assert record.inputs["managedZone"] == settings.dns_zone
    assert record.inputs["name"] == f"{settings.domain}."
    assert record.inputs["type"] == "A"
    assert address.urn in record.dependencies
    certificate = _one(plan, "gcp:compute/managedSslCertificate:ManagedSslCertificate")
    assert certificate.inputs["managed"]["domains"] == [settings.domain]


def test_a_domain_without_its_dns_zone_names_the_key(environments_copy: Path) -> None:
    path = environments_copy / "dev" / "settings.toml"
    path.write_text(path.read_text().replace('dns_zone = "billing-dev"\n', ""))
    with pytest.raises(SettingsError) as error:
        load_environment("dev", root=environments_copy)
    assert error.value.key == "gcp.dns_zone"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_cmek_users_wait_for_the_grants_to_propagate(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    [wait] = plan.of_type("time:index/sleep:Sleep")
    grants = plan.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    assert {g.urn for g in grants} <= set(wait.dependencies)
    users = [
        *plan.of_type("gcp:sql/databaseInstance:DatabaseInstance"),
        *plan.of_type("gcp:secretmanager/secret:Secret"),
        *plan.of_type("gcp:artifactregistry/repository:Repository"),
    ]
    assert users
    for user in users:
        # Directly, or through the instance a replica copies.
        assert wait.urn in _upstream(plan, user), user.name


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_cloud_run_pulls_digests_from_a_repository_it_may_read(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    repository = _one(plan, "gcp:artifactregistry/repository:Repository")
    host = f"us-central1-docker.pkg.dev/example-billing-{env}/{repository.inputs['repositoryId']}/"
    grant = _one(plan, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    assert grant.inputs["role"] == "roles/artifactregistry.reader"
    assert "serverless-robot-prod" in grant.inputs["member"]
    for workload in (r for r in plan.resources if r.type in RUN):
        for container in _containers(workload):
            image = str(container["image"])
            assert image.startswith(host), image
            assert "@sha256:" in image, image
        assert grant.urn in workload.dependencies


def test_the_deploy_identity_can_set_iam_on_keys_secrets_and_workloads() -> None:
    deploy = set(ROLES["deploy"])
    assert "roles/editor" not in deploy
    assert {
        "roles/cloudkms.admin",
        "roles/secretmanager.admin",
        "roles/run.admin",
        "roles/serviceusage.serviceUsageAdmin",
        "roles/dns.admin",
    } <= deploy
