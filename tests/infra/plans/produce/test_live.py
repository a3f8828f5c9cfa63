"""The live path through Pulumi's Automation API, against the stand-in CLI on PATH."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from infra.plans.produce import live
from infra.plans.produce.offline import render
from infra.plans.read.formats import parse_preview
from infra.plans.read.model import SECRET, UNKNOWN, Plan, PlanError, load_plan
from infra.settings import REPO_ROOT, Cloud, EnvironmentSettings, SettingsError, environment
from tests.infra.plans.conftest import DATA, Standin, run_cli

PREVIEW = DATA / "preview_dev_aws.json"
DRIFTED = DATA / "drift_production_aws.json"
CLEAN = DATA / "clean_production_aws.json"


def _new_states(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [s["newState"] for s in data["steps"] if "newState" in s]


def _with_cli_pin(env: EnvironmentSettings, version: str) -> EnvironmentSettings:
    return env.model_copy(update={"pins": env.pins.model_copy(update={"pulumi_cli": version})})


@pytest.fixture(scope="module")
def offline_dev_aws() -> Plan:
    # Only the plan's shape matters here; provider deprecations are the offline tests' concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return render(environment("dev"), Cloud.AWS)


def test_preview_returns_the_live_new_states(standin: Standin) -> None:
    standin.set(preview=str(PREVIEW))
    env = environment("dev")
    standin.bootstrap((env, Cloud.AWS))

    plan = live.preview(env, Cloud.AWS)

    assert (plan.environment, plan.cloud, plan.stack, plan.mode) == (
        "dev",
        "aws",
        "billing-aws/dev",
        "live",
    )
    states = {s["urn"]: s for s in _new_states(PREVIEW)}
    assert sorted(r.urn for r in plan.resources) == sorted(states)
    for resource in plan.resources:
        state = states[resource.urn]
        assert resource.type == state["type"]
        assert resource.name == state["urn"].split("::")[-1]
        assert resource.parent == state["parent"]
        assert resource.protect == state["protect"]
        assert resource.custom == state["custom"]
        assert resource.provider == state["provider"]
        assert resource.dependencies == sorted(state["dependencies"])
        assert set(resource.inputs) == set(state["inputs"])
    by_name = {r.name: r for r in plan.resources}
    # A delete has no newState, so contributes no resource.
    assert "network-nat-eip-1" not in by_name
    assert by_name["database-instance"].inputs["password"] == SECRET
    assert by_name["network-app-0"].inputs["vpcId"] == UNKNOWN
    assert by_name["network-flow-logs"].inputs["retentionInDays"] == 14
    assert plan.outputs == {"database_password": SECRET, "vpc_id": UNKNOWN}
    assert "hunter2" not in plan.to_json()

    version, select, preview = standin.calls()
    assert version.argv == ["version"]
    assert select.command == ["stack", "select"]
    assert select.value("--stack") == "dev"
    assert preview.command == ["preview"]
    assert "--json" in preview.argv
    assert preview.value("--stack") == "dev"
    assert (preview.value("--event-log") or "").startswith("tcp://127.0.0.1:")
    for flag in ("--refresh", "--expect-no-changes", "--save-plan"):
        assert flag not in preview.argv
    for call in (select, preview):
        assert Path(call.cwd) == live.STACKS_DIR / "aws"
        assert call.env["PULUMI_BACKEND_URL"] == env.pulumi.backend(Cloud.AWS).backend_url
        assert call.env["PULUMI_AUTOMATION_API"] == "true"


def test_live_plan_file_has_the_offline_plan_shape(
    standin: Standin, offline_dev_aws: Plan, tmp_path: Path
) -> None:
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((environment("dev"), Cloud.AWS))
    live_plan = live.preview(environment("dev"), Cloud.AWS)

    written = json.loads(live_plan.write(tmp_path / "live").read_text(encoding="utf-8"))
    offline = json.loads(offline_dev_aws.write(tmp_path / "offline").read_text(encoding="utf-8"))

    assert set(written) == set(offline)
    assert {frozenset(r) for r in written["resources"]} == {
        frozenset(r) for r in offline["resources"]
    }
    # Every consumer reads plan files through load_plan: the live one round-trips.
    assert load_plan(tmp_path / "live" / "dev-aws.json") == live_plan
    # Both name the same stack and provider URNs the same way.
    assert written["stack"] == offline["stack"]
    offline_types = {r["type"] for r in offline["resources"]}
    assert {"pulumi:pulumi:Stack", "pulumi:providers:aws", "aws:ec2/vpc:Vpc"} <= offline_types
    assert {r.urn for r in offline_dev_aws.resources} >= {
        r.urn for r in live_plan.resources if r.type in {"pulumi:pulumi:Stack", "aws:ec2/vpc:Vpc"}
    }


@pytest.mark.parametrize(("name", "cloud"), [("staging", Cloud.GCP), ("production", Cloud.AWS)])
def test_preview_targets_the_environment_stack_and_backend(
    name: str, cloud: Cloud, standin: Standin
) -> None:
    standin.set(preview=str(PREVIEW))
    env = environment(name)
    standin.bootstrap((env, cloud))
    live.preview(env, cloud)
    for call in standin.calls()[1:]:
        assert Path(call.cwd) == live.STACKS_DIR / cloud.value
        assert call.value("--stack") == name
        assert call.env["PULUMI_BACKEND_URL"] == env.pulumi.backend(cloud).backend_url


def test_cli_version_other_than_the_pin_is_refused(standin: Standin) -> None:
    standin.set(preview=str(PREVIEW), version="3.271.0")
    with pytest.raises(SettingsError) as raised:
        live.preview(environment("dev"), Cloud.AWS)
    message = str(raised.value)
    assert message.startswith("environments/dev/pins.toml: key 'pulumi_cli': ")
    assert "3.271.0" in message
    assert "3.272.0" in message
    assert [c.argv for c in standin.calls()] == [["version"]], "nothing but `pulumi version` ran"


def test_older_cli_events_go_to_a_file(standin: Standin) -> None:
    # CLI versions up to 3.205 write engine events to a file rather than over gRPC.
    env = _with_cli_pin(environment("dev"), "3.205.0")
    standin.set(preview=str(PREVIEW), version="3.205.0")
    standin.bootstrap((env, Cloud.AWS))
    plan = live.preview(env, Cloud.AWS)
    assert len(plan.resources) == len(_new_states(PREVIEW))
    (preview,) = standin.calls_of("preview")
    event_log = preview.value("--event-log") or ""
    assert event_log.endswith("eventlog.txt")
    assert not event_log.startswith("tcp://")


def test_failed_preview_is_an_error_not_a_plan(standin: Standin) -> None:
    standin.bootstrap((environment("dev"), Cloud.AWS))
    standin.set(preview=str(PREVIEW), exit="255")
    with pytest.raises(PlanError, match=r"pulumi preview --json \(dev-aws\)"):
        live.preview(environment("dev"), Cloud.AWS)


def test_saved_plan_is_applied_by_up(standin: Standin, tmp_path: Path) -> None:
    standin.set(preview=str(PREVIEW))
    env = environment("dev")
    standin.bootstrap((env, Cloud.AWS))
    saved = tmp_path / "plans" / "dev-aws.update-plan.json"

    live.preview(env, Cloud.AWS, save_plan=saved)
    assert saved.is_file()
    (preview,) = standin.calls_of("preview")
    assert preview.value("--save-plan") == str(saved)

    assert live.up(env, Cloud.AWS, plan_file=saved) == "succeeded"
    (up,) = standin.calls_of("up")
    assert up.value("--plan") == str(saved)
    assert {"--yes", "--skip-preview"} <= set(up.argv)
    assert up.value("--stack") == "dev"
    assert Path(up.cwd) == live.STACKS_DIR / "aws"
    assert up.env["PULUMI_BACKEND_URL"] == env.pulumi.backend(Cloud.AWS).backend_url


def test_up_without_the_saved_plan_runs_nothing(standin: Standin, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="file not found"):
        live.up(environment("dev"), Cloud.AWS, plan_file=tmp_path / "absent.json")
    assert standin.calls() == []


def test_failed_up_is_an_error(standin: Standin) -> None:
    standin.bootstrap((environment("dev"), Cloud.AWS))
    standin.set(exit="1")
    with pytest.raises(PlanError, match=r"pulumi up \(dev-aws\).*update failed"):
        live.up(environment("dev"), Cloud.AWS)


def test_drift_is_a_refreshed_preview_expecting_no_changes(
    standin: Standin, tmp_path: Path
) -> None:
    standin.set(preview=str(DRIFTED))
    stacks = [(environment("production"), Cloud.AWS), (environment("production"), Cloud.GCP)]
    standin.bootstrap(*stacks)

    assert live.drift(stacks, tmp_path) == 2

    previews = standin.calls_of("preview")
    assert len(previews) == 2
    for call in previews:
        assert {"--refresh", "--expect-no-changes", "--json"} <= set(call.argv)
    # Never `pulumi refresh`: with --expect-no-changes it would write state.
    assert not [c for c in standin.calls() if c.command == ["refresh"]]
    assert [c.command for c in standin.calls() if c.command[0] == "stack"] == [
        ["stack", "select"]
    ] * 2
    for key in ("production-aws", "production-gcp"):
        assert "`replace`" in (tmp_path / f"{key}.md").read_text(encoding="utf-8")
    assert "**drift** in 4 resources" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_clean_stacks_report_no_drift(standin: Standin, tmp_path: Path) -> None:
    standin.set(preview=str(CLEAN))
    standin.bootstrap((environment("dev"), Cloud.AWS))
    assert live.drift([(environment("dev"), Cloud.AWS)], tmp_path) == 0
    assert "No drift" in (tmp_path / "dev-aws.md").read_text(encoding="utf-8")


def test_a_failing_stack_hides_none_of_the_others(standin: Standin, tmp_path: Path) -> None:
    # staging has no stack in the backend yet; drift selects, never creates.
    standin.set(preview=str(DRIFTED))
    stacks = [(environment(name), Cloud.AWS) for name in ("dev", "staging", "production")]
    standin.bootstrap(stacks[0], stacks[2])

    assert live.drift(stacks, tmp_path) == 1

    assert not standin.calls_of("stack", "init")
    assert "`replace`" in (tmp_path / "dev-aws.md").read_text(encoding="utf-8")
    assert "`replace`" in (tmp_path / "production-aws.md").read_text(encoding="utf-8")
    staging = (tmp_path / "staging-aws.md").read_text(encoding="utf-8")
    assert "no stack 'staging' of billing-aws" in staging
    assert "nox -s bootstrap -- --env staging --cloud aws" in staging
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| staging-aws | error:" in summary
    assert "| dev-aws | **drift**" in summary
    assert "| production-aws | **drift**" in summary


def test_preview_failing_without_json_is_a_drift_error(standin: Standin, tmp_path: Path) -> None:
    missing = tmp_path / "absent.json"
    standin.bootstrap((environment("dev"), Cloud.AWS))
    standin.set(preview=str(missing))  # the stand-in crashes reading it: no JSON on stdout
    assert live.drift([(environment("dev"), Cloud.AWS)], tmp_path / "out") == 1
    assert "**Error:**" in (tmp_path / "out" / "dev-aws.md").read_text(encoding="utf-8")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_cli_drift_through_the_standin(
    standin: Standin,
    initialised: list[list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin.set(preview=str(DRIFTED))
    standin.bootstrap((environment("dev"), Cloud.AWS))
    args = ("drift", "--env", "dev", "--cloud", "aws", "--out", str(tmp_path / "d"))
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 2, err
    assert "dev-aws: DRIFT in 4 resources" in out
    assert initialised == [["dev-aws"]]


@pytest.mark.usefixtures("initialised")
def test_cli_up_refuses_a_mismatched_cli(
    standin: Standin, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.set(version="3.100.0")
    code, _, err = run_cli("up", "--env", "dev", "--cloud", "aws", capsys=capsys)
    assert code == 1
    assert "key 'pulumi_cli'" in err
    assert "Traceback" not in err
    assert not standin.calls_of("up")


def test_cli_up_without_a_cli_deploys_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "infra", "up", "--env", "dev"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "needs the Pulumi CLI" in result.stderr
    assert "Nothing was deployed" in result.stderr


def test_plan_fields_match_resource_dataclass(standin: Standin) -> None:
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((environment("dev"), Cloud.AWS))
    plan = live.preview(environment("dev"), Cloud.AWS)
    assert all(set(asdict(r)) == set(asdict(plan.resources[0])) for r in plan.resources)


def test_cli_up_plan_needs_exactly_one_stack(standin: Standin, tmp_path: Path) -> None:
    saved = tmp_path / "update-plan.json"
    saved.write_text("{}", encoding="utf-8")
    result = _cli("up", "--env", "dev", "--plan", str(saved), cwd=REPO_ROOT)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: --plan applies to one stack; select one with --env and --cloud (2 selected)"
    )
    assert standin.calls() == []


def test_malformed_new_state_names_the_key() -> None:
    urn = "urn:pulumi:dev::billing-aws::aws:s3/bucket:Bucket::assets"
    state = {"urn": urn, "type": "aws:s3/bucket:Bucket", "inputs": ["not", "an", "object"]}
    data = {"steps": [{"op": "create", "urn": urn, "newState": state}]}
    with pytest.raises(PlanError, match=r"preview\.json: key 'steps\[0\]\.newState\.inputs'"):
        live.plan_from_preview(parse_preview(data, "preview.json"), environment("dev"), Cloud.AWS)


def test_preview_without_engine_events_is_an_error(standin: Standin) -> None:
    # The summary arrives on the event log; without it the Automation API has no result.
    standin.bootstrap((environment("dev"), Cloud.AWS))
    standin.set(preview=str(PREVIEW), events="none")
    with pytest.raises(PlanError, match="summary event never found"):
        live.preview(environment("dev"), Cloud.AWS)


@pytest.mark.usefixtures("initialised")
def test_cli_live_preview_saves_a_plan_per_stack(
    standin: Standin,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((environment("dev"), Cloud.AWS))
    out, saved = tmp_path / "plans", tmp_path / "saved"
    args = ("--env", "dev", "--cloud", "aws", "--out", str(out), "--save-plan", str(saved))
    code, stdout, stderr = run_cli("preview", *args, capsys=capsys)
    # The fixture's resources are not compliant: the live preview's report fails the policy pack.
    assert code == 1, stderr
    assert stdout.startswith("Live preview")
    assert (out / "dev-aws.json").exists()
    assert "## Policy" in (out / "report.md").read_text()
    [call] = standin.calls_of("preview")
    assert call.value("--save-plan") == str(saved / "dev-aws.plan.json")
    assert call.value("--stack") == "dev"


@pytest.mark.usefixtures("initialised")
def test_live_preview_steps_go_through_the_destructive_change_guard(
    standin: Standin,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin.set(preview=str(DRIFTED))  # replaces the production database
    standin.bootstrap((environment("production"), Cloud.AWS))
    out = tmp_path / "plans"
    args = ["preview", "--env", "production", "--cloud", "aws", "--out", str(out)]
    code, _, err = run_cli(*args, capsys=capsys)
    assert code == 1, err
    report = (out / "report.md").read_text()
    assert "## Changes against `the deployed stacks (live preview)`" in report
    assert "## Destructive-change guard: FAIL" in report
    assert "database-instance" in report
    urn = (
        "urn:pulumi:production::billing-aws::"
        "billing:aws:Database$aws:rds/instance:Instance::database-instance"
    )
    run_cli(*args, "--allow-replace", urn, capsys=capsys)
    assert "## Destructive-change guard: pass" in (out / "report.md").read_text()
