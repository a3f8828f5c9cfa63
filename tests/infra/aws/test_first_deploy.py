"""What a first `pulumi up` of AWS would hit, each rendered offline (issue 11)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import infra.aws.program
from infra.aws.elb_logs import LOG_DELIVERY_SERVICE, log_writer
from infra.bootstrap.program import render as render_bootstrap
from infra.plans.produce.offline import render
from infra.plans.read.model import Plan, Resource
from infra.settings import (
    Cloud,
    EnvironmentSettings,
    SettingsError,
    environment,
    fargate_pair_error,
    load_environment,
)

ENVIRONMENTS = ("dev", "staging", "production")
# CreateSecurityGroup / AuthorizeSecurityGroup*: hashicorp/terraform-provider-aws#18874.
EC2_DESCRIPTION = re.compile(r"^[A-Za-z0-9 ._\-:/()#,@\[\]+=&;{}!$*]*$")


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {env: render(environment(env), Cloud.AWS) for env in ENVIRONMENTS}


def _one(plan: Plan, type_: str, name: str | None = None) -> Resource:
    found = [r for r in plan.of_type(type_) if name is None or r.name == name]
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def _with_aws(env: str, **changes: Any) -> EnvironmentSettings:
    settings = environment(env)
    assert settings.aws is not None
    return settings.model_copy(update={"aws": settings.aws.model_copy(update=changes)})


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_security_group_descriptions_fit_the_ec2_character_set(
    plans: dict[str, Plan], env: str
) -> None:
    groups = plans[env].of_type("aws:ec2/securityGroup:SecurityGroup")
    assert groups
    for group in groups:
        texts = [group.inputs["description"]]
        texts += [r.get("description", "") for r in group.inputs.get("ingress", [])]
        texts += [r.get("description", "") for r in group.inputs.get("egress", [])]
        for text in texts:
            assert EC2_DESCRIPTION.match(text), (group.name, text)
            assert len(text) < 256, (group.name, text)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_listener_waits_for_a_certificate_the_stack_validated(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    settings = environment(env).aws
    assert settings is not None
    certificate = _one(plan, "aws:acm/certificate:Certificate")
    assert certificate.inputs["domainName"] == settings.domain
    assert certificate.inputs["validationMethod"] == "DNS"
    record = _one(plan, "aws:route53/record:Record", "certificate-validation")
    assert record.inputs["zoneId"] == settings.hosted_zone_id
    assert record.inputs["name"].endswith(f".{settings.domain}.")
    validation = _one(plan, "aws:acm/certificateValidation:CertificateValidation")
    assert {certificate.urn, record.urn} <= set(validation.dependencies)
    https = _one(plan, "aws:lb/listener:Listener", "edge-https")
    assert validation.urn in https.dependencies
    assert https.inputs["certificateArn"] == validation.inputs["certificateArn"]


def test_no_environment_configures_a_certificate_arn(environments_copy: Path) -> None:
    path = environments_copy / "dev" / "settings.toml"
    path.write_text(
        path.read_text().replace(
            "[aws]\n",
            '[aws]\ncertificate_arn = "arn:aws:acm:us-east-1:111111111111:certificate/x"\n',
        )
    )
    with pytest.raises(SettingsError) as error:
        load_environment("dev", root=environments_copy)
    assert (error.value.key, error.value.message) == ("aws.certificate_arn", "unknown key")


def test_https_needs_a_domain_and_its_hosted_zone(environments_copy: Path) -> None:
    path = environments_copy / "staging" / "settings.toml"
    text = path.read_text()
    path.write_text(re.sub(r'hosted_zone_id = "[^"]+"\n', "", text))
    with pytest.raises(SettingsError) as error:
        load_environment("staging", root=environments_copy)
    assert error.value.key == "aws.hosted_zone_id"
    assert error.value.file.endswith("staging/settings.toml")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_tasks_pull_pinned_digests_through_the_environments_cache(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    settings = environment(env)
    assert settings.aws is not None
    own_registry = f"{settings.aws.account_id}.dkr.ecr.{settings.aws.region}.amazonaws.com"
    rule = _one(plan, "aws:ecr/pullThroughCacheRule:PullThroughCacheRule")
    prefix = rule.inputs["ecrRepositoryPrefix"]
    for task in plan.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        [container] = json.loads(task.inputs["containerDefinitions"])
        assert container["image"].startswith(f"{own_registry}/{prefix}/"), container["image"]
        assert re.search(r"@sha256:[0-9a-f]{64}$", container["image"])
    for policy in plan.of_type("aws:iam/rolePolicy:RolePolicy"):
        if not policy.name.endswith("-execution-policy"):
            continue
        statements = json.loads(policy.inputs["policy"])["Statement"]
        [fill] = [s for s in statements if s["Sid"] == "FillTheCache"]
        assert set(fill["Action"]) == {"ecr:CreateRepository", "ecr:BatchImportUpstreamImage"}
        assert fill["Resource"].endswith(f":repository/{prefix}/*")
    # `up` fails when a service's tasks cannot start, instead of reporting success.
    services = plan.of_type("aws:ecs/service:Service")
    assert services
    assert all(s.inputs["waitForSteadyState"] is True for s in services)
    assert all(rule.urn in s.dependencies for s in services)


@pytest.mark.parametrize(
    ("region", "principal"),
    [
        ("us-east-1", {"AWS": "arn:aws:iam::127311923021:root"}),
        ("eu-west-1", {"AWS": "arn:aws:iam::156460612806:root"}),
        # Opened after August 2022: no ELB account, the log-delivery service principal.
        ("eu-central-2", {"Service": LOG_DELIVERY_SERVICE}),
        ("ap-southeast-4", {"Service": LOG_DELIVERY_SERVICE}),
    ],
)
def test_access_log_bucket_admits_the_regions_log_writer(
    region: str, principal: dict[str, str]
) -> None:
    assert log_writer(region) == principal
    plan = render(_with_aws("dev", region=region), Cloud.AWS)
    policy = json.loads(
        _one(plan, "aws:s3/bucketPolicy:BucketPolicy", "edge-access-logs-policy").inputs["policy"]
    )
    [writes] = [s for s in policy["Statement"] if s["Sid"] == "LoadBalancerWritesAccessLogs"]
    assert writes["Principal"] == principal


@pytest.mark.parametrize(
    ("cpu", "memory", "accepted"),
    [
        (256, 512, True),
        (256, 1536, False),
        (512, 3072, True),
        (1024, 1024, False),
        (2048, 4608, False),
        (2048, 5120, True),
        (4096, 30720, True),
        (4096, 31744, False),
        (8192, 20480, True),
        (8192, 18432, False),
        (16384, 40960, True),
        (16384, 36864, False),
    ],
)
def test_fargate_pairs_follow_awss_table_steps_included(
    cpu: int, memory: int, accepted: bool
) -> None:
    assert (fargate_pair_error(cpu, memory) is None) is accepted


def test_a_cpu_override_is_checked_against_the_manifests_memory(environments_copy: Path) -> None:
    # The api manifest asks for 1024 MiB; 1024 CPU units need at least 2048.
    path = environments_copy / "staging" / "settings.toml"
    path.write_text(path.read_text().replace("[services.api]\n", "[services.api]\ncpu = 1024\n"))
    with pytest.raises(SettingsError) as error:
        load_environment("staging", root=environments_copy)
    assert error.value.key == "services.api.cpu"
    assert "1024 MiB does not fit 1024 CPU units" in error.value.message


def test_an_off_step_memory_names_the_file_and_key(environments_copy: Path) -> None:
    path = environments_copy / "production" / "settings.toml"
    path.write_text(
        path.read_text().replace("cpu = 1024\nmemory = 2048", "cpu = 2048\nmemory = 4608")
    )
    with pytest.raises(SettingsError) as error:
        load_environment("production", root=environments_copy)
    assert error.value.file.endswith("environments/production/settings.toml")
    assert error.value.key == "services.api.memory"


def test_no_cloudfront_url_until_there_is_a_site(
    plans: dict[str, Plan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "cloudfront_url" not in plans["dev"].outputs
    assert plans["dev"].of_type("aws:s3/bucketObject:BucketObject") == []
    site = tmp_path / "dist"
    (site / "assets").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>billing</title>\n")
    (site / "assets" / "app.js").write_text("console.log('billing');\n")
    monkeypatch.setattr(infra.aws.program, "SITE_DIR", site)
    plan = render(environment("dev"), Cloud.AWS)
    objects = {o.inputs["key"]: o.inputs for o in plan.of_type("aws:s3/bucketObject:BucketObject")}
    assert set(objects) == {"index.html", "assets/app.js"}
    assert objects["index.html"]["contentType"] == "text/html"
    assert objects["index.html"]["cacheControl"] == "no-cache"
    assert plan.outputs["cloudfront_url"].startswith("https://")


@pytest.mark.parametrize(("env", "days"), [("dev", 0), ("staging", 7), ("production", 30)])
def test_dev_secrets_free_their_names_at_once(plans: dict[str, Plan], env: str, days: int) -> None:
    secrets = plans[env].of_type("aws:secretsmanager/secret:Secret")
    assert secrets
    assert {s.inputs["recoveryWindowInDays"] for s in secrets} == {days}


def test_the_recovery_window_follows_the_tier_not_the_name() -> None:
    preprod = environment("production").model_copy(update={"name": "preprod"})
    secrets = render(preprod, Cloud.AWS).of_type("aws:secretsmanager/secret:Secret")
    assert secrets
    assert {s.inputs["recoveryWindowInDays"] for s in secrets} == {30}


def test_bootstrap_creates_the_ecs_service_linked_role() -> None:
    plan = render_bootstrap(environment("dev"), Cloud.AWS)
    [role] = plan.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert role.inputs["awsServiceName"] == "ecs.amazonaws.com"
