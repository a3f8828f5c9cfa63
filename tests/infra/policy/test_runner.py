"""The offline runner on rendered plans: shipped stacks pass, an edited copy fails by rule name."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from infra.cli import main
from infra.plans.produce.offline import render
from infra.plans.read.model import Plan, plan_from_dict
from infra.policy import pulumi_pack, runner
from infra.policy.rules import RULES
from infra.settings import (
    Cloud,
    Enforcement,
    EnvironmentSettings,
    PolicyExemption,
    PolicySettings,
    SettingsError,
    environment,
    load_environment,
)

ENVIRONMENTS = ("dev", "staging", "production")
TODAY = dt.date(2026, 11, 22)


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    rendered = [render(environment(e), c) for e in ENVIRONMENTS for c in (Cloud.AWS, Cloud.GCP)]
    return {p.key: p for p in rendered}


def _data(plan: Plan) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(plan.to_json())
    return data


def _one(data: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [r for r in data["resources"] if r["type"] == type_]
    assert found, f"the rendered stack has no {type_}"
    resource: dict[str, Any] = found[0]
    return resource


def test_shipped_environments_pass_every_mandatory_rule(plans: dict[str, Plan]) -> None:
    result = runner.evaluate(list(plans.values()), [environment(e) for e in ENVIRONMENTS], TODAY)
    assert result.failures == [], runner.console(result)
    assert result.rules == len(RULES) >= 30
    assert sorted(result.stacks) == sorted(plans)


def test_edited_production_plan_fails_with_the_rules_names(
    plans: dict[str, Plan], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aws, gcp = _data(plans["production-aws"]), _data(plans["production-gcp"])
    database = _one(aws, "aws:rds/instance:Instance")
    database["inputs"]["storageEncrypted"] = False
    database["protect"] = False
    firewall = next(r for r in aws["resources"] if r["name"] == "firewall-database")
    firewall["inputs"]["ingress"].append(
        {"cidrBlocks": ["0.0.0.0/0"], "fromPort": 5432, "toPort": 5432, "protocol": "tcp"}
    )
    sql = _one(gcp, "gcp:sql/databaseInstance:DatabaseInstance")
    sql["inputs"]["settings"]["ipConfiguration"]["ipv4Enabled"] = True
    sql["inputs"]["settings"]["ipConfiguration"]["authorizedNetworks"] = [{"value": "0.0.0.0/0"}]
    files = []
    for name, data in (("production-aws", aws), ("production-gcp", gcp)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data), encoding="utf-8")
        files.append(str(path))

    assert main(["policy", *files, "--report", str(tmp_path / "policy.md")]) == 1
    out = capsys.readouterr().out
    for rule in (
        "rds-storage-encrypted",
        "sg-no-world-ingress",
        "protect-stateful-in-production",
        "cloudsql-no-public-ip",
        "cloudsql-no-open-networks",
    ):
        assert any(line.startswith("FAIL") and f" {rule}: " in line for line in out.splitlines())
    assert "## Policy: FAIL" in (tmp_path / "policy.md").read_text(encoding="utf-8")


def test_unedited_copy_passes_through_the_cli(
    plans: dict[str, Plan], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = plans["production-aws"].write(tmp_path)
    assert main(["policy", str(path)]) == 0
    assert "policy: pass" in capsys.readouterr().out


def _with_policy(name: str, policy: PolicySettings) -> EnvironmentSettings:
    return environment(name).model_copy(update={"policy": policy})


def _unprotected(plans: dict[str, Plan]) -> tuple[Plan, str]:
    data = _data(plans["production-aws"])
    database = _one(data, "aws:rds/instance:Instance")
    database["protect"] = False
    return plan_from_dict(data, "edited"), database["urn"]


def test_exemption_waives_until_it_expires(plans: dict[str, Plan]) -> None:
    plan, urn = _unprotected(plans)
    exemption = PolicyExemption(
        rule="protect-stateful-in-production",
        resource="database-*",
        reason="migration to a new instance",
        expires=TODAY,
    )
    settings = _with_policy("production", PolicySettings(exemptions=[exemption]))

    waived = runner.evaluate([plan], [settings], TODAY)
    assert waived.ok
    assert [f.urn for f in waived.findings if f.exemption] == [urn]
    assert "exempt until 2026-11-22" in runner.verdict(waived).markdown

    expired = runner.evaluate([plan], [settings], TODAY + dt.timedelta(days=1))
    assert not expired.ok
    rules = sorted({f.rule for f in expired.failures})
    assert rules == ["policy-exemption-expired", "protect-stateful-in-production"]


def test_enforcement_override_makes_a_rule_advisory(plans: dict[str, Plan]) -> None:
    plan, _ = _unprotected(plans)
    levels = {"protect-stateful-in-production": Enforcement.ADVISORY}
    result = runner.evaluate(
        [plan], [_with_policy("production", PolicySettings(enforcement=levels))]
    )
    assert result.ok
    assert [f.level for f in result.findings if f.rule == "protect-stateful-in-production"] == [
        Enforcement.ADVISORY
    ]


def test_unknown_rule_in_policy_settings_names_file_and_key(plans: dict[str, Plan]) -> None:
    bad = PolicyExemption(rule="no-such-rule", resource="*", reason="r", expires=TODAY)
    settings = _with_policy("staging", PolicySettings(exemptions=[bad]))
    with pytest.raises(SettingsError) as caught:
        runner.evaluate([plans["staging-aws"]], [settings], TODAY)
    assert caught.value.key == "policy.exemptions[0].rule"
    assert caught.value.file == "environments/staging/settings.toml"


def test_policy_settings_load_from_the_environment_file(environments_copy: Path) -> None:
    settings_file = environments_copy / "dev" / "settings.toml"
    settings_file.write_text(
        settings_file.read_text(encoding="utf-8")
        + '\n[policy.enforcement]\nalb-waf = "advisory"\n\n[[policy.exemptions]]\n'
        'rule = "log-retention"\nresource = "network-*"\nreason = "r"\nexpires = 2027-01-31\n',
        encoding="utf-8",
    )
    loaded = load_environment("dev", environments_copy).policy
    assert loaded.enforcement == {"alb-waf": Enforcement.ADVISORY}
    assert loaded.exemptions[0].expires == dt.date(2027, 1, 31)
    settings_file.write_text(
        settings_file.read_text(encoding="utf-8").replace("2027-01-31", '"soon"'), encoding="utf-8"
    )
    with pytest.raises(SettingsError) as caught:
        load_environment("dev", environments_copy)
    assert caught.value.key == "policy.exemptions[0].expires"


def test_pulumi_policy_pack_wraps_the_same_rules() -> None:
    policies = pulumi_pack.policies()
    assert [p.name for p in policies] == [r.name for r in RULES]
    policy = next(p for p in policies if p.name == "rds-storage-encrypted")
    assert isinstance(policy, ResourceValidationPolicy)
    assert policy.enforcement_level is EnforcementLevel.MANDATORY
    opts = PolicyResourceOptions(
        protect=True,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    urn = "urn:pulumi:production::billing-aws::aws:rds/instance:Instance::database-instance"
    reported: list[str] = []
    props = {"storageEncrypted": False}
    args = ResourceValidationArgs(
        "aws:rds/instance:Instance", props, urn, "database-instance", opts, None
    )
    policy.validate(args, lambda message, _urn: reported.append(message))
    assert reported == ["storageEncrypted is not true"]


def test_pack_config_carries_per_environment_levels() -> None:
    settings = _with_policy("dev", PolicySettings(enforcement={"alb-waf": Enforcement.ADVISORY}))
    config = pulumi_pack.pack_config(settings)
    assert config["alb-waf"] == {"enforcementLevel": "advisory"}
    assert config["rds-storage-encrypted"] == {"enforcementLevel": "mandatory"}


def test_one_method_decides_every_exemption_match() -> None:
    # The offline runner and the pulumi-policy pack both ask PolicyExemption.waives.
    urn = "urn:pulumi:dev::billing-aws::aws:s3/bucket:Bucket::logs-bucket"
    day = dt.date(2026, 11, 29)
    by_name = PolicyExemption(rule="s3-versioning", resource="logs-*", reason="r", expires=day)
    assert by_name.waives("s3-versioning", urn, "logs-bucket", day)
    assert not by_name.waives("s3-versioning", urn, None, day), "no name, no pattern match"
    assert not by_name.waives("s3-encrypted", urn, "logs-bucket", day), "another rule"
    assert not by_name.waives("s3-versioning", urn, "logs-bucket", day + dt.timedelta(days=1))
    by_urn = PolicyExemption(rule="s3-versioning", resource=urn, reason="r", expires=day)
    assert by_urn.waives("s3-versioning", urn, None, day)
