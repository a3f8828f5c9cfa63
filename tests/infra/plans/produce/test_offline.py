"""Offline preview: every stack renders under the mock runtime into deterministic plan files."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pulumi
import pulumi_random as random
import pytest

from infra.git import git
from infra.plans.produce import mocks
from infra.plans.produce.offline import RenderError, render
from infra.plans.read.model import SECRET, PlanError, load_plan
from infra.settings import REPO_ROOT, Cloud, environment

PLAN_KEYS = {"environment", "cloud", "stack", "mode", "resources", "outputs"}
RESOURCE_KEYS = {
    "urn",
    "type",
    "name",
    "parent",
    "protect",
    "inputs",
    "dependencies",
    "custom",
    "provider",
}


def run_cli(
    *args: str, cwd: Path = REPO_ROOT, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no `pulumi` on PATH: the offline path
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "infra", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_preview_writes_six_plans_and_a_report_deterministically(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    result = run_cli("preview", "--out", str(first))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("Offline preview (Pulumi CLI not found)")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(
        [f"{e}-{c}.json" for e in ("dev", "staging", "production") for c in ("aws", "gcp")]
        + ["report.md", "results.jsonl"]
    )
    assert run_cli("preview", "--offline", "--out", str(second)).returncode == 0
    for plan_file in first.glob("*.json"):
        # Same commit, byte-identical plan files.
        assert plan_file.read_bytes() == (second / plan_file.name).read_bytes(), plan_file.name
    report = (first / "report.md").read_text()
    assert "| production-aws | offline |" in report
    assert "mock runtime" in report


def test_plan_shape_matches_the_contract() -> None:
    plan = render(environment("dev"), Cloud.AWS)
    data = json.loads(plan.to_json())
    assert set(data) == PLAN_KEYS
    assert data["mode"] == "offline"
    assert data["stack"] == "billing-aws/dev"
    for resource in data["resources"]:
        assert set(resource) == RESOURCE_KEYS
        assert resource["urn"].startswith("urn:pulumi:dev::billing-aws::")
    # Inputs as the engine sees them: camelCase.
    vpc = next(r for r in data["resources"] if r["type"] == "aws:ec2/vpc:Vpc")
    assert vpc["inputs"]["cidrBlock"] == "10.10.0.0/16"
    assert vpc["inputs"]["enableDnsHostnames"] is True


def test_renders_after_asyncio_run_closed_the_thread_s_loop() -> None:
    async def nothing() -> None:
        return None

    # asyncio.run leaves the thread without an event loop; the SDK's runtime takes the thread's.
    asyncio.run(nothing())
    plan = render(environment("dev"), Cloud.GCP)
    assert plan.resources


def test_dependency_edges_survive_through_computed_ids() -> None:
    plan = render(environment("production"), Cloud.AWS)
    by_urn = plan.by_urn()
    vpc = next(r for r in plan.resources if r.type == "aws:ec2/vpc:Vpc")
    subnets = plan.of_type("aws:ec2/subnet:Subnet")
    assert len(subnets) == 9  # three tiers across three zones
    vpc_id = plan.outputs["vpc_id"]
    assert vpc_id.startswith("vpc-")
    for subnet in subnets:
        assert vpc.urn in subnet.dependencies
        assert subnet.inputs["vpcId"] == vpc_id
        assert subnet.inputs["availabilityZone"] in {"us-east-1a", "us-east-1b", "us-east-1c"}
        assert subnet.parent in by_urn  # parented to the Network component
    nats = plan.of_type("aws:ec2/natGateway:NatGateway")
    assert len(nats) == 3  # one per AZ in production
    assert len(render(environment("dev"), Cloud.AWS).of_type("aws:ec2/natGateway:NatGateway")) == 1


def test_secrets_are_redacted_in_inputs() -> None:
    def program() -> None:
        import pulumi_aws as aws

        password = random.RandomPassword("pw", length=24)
        secret = aws.secretsmanager.Secret("db")
        aws.secretsmanager.SecretVersion("db-v", secret_id=secret.id, secret_string=password.result)
        pulumi.export("password", password.result)
        pulumi.export("plain", "visible")

    from infra.plans.produce import offline

    original = offline.program_for
    offline.program_for = lambda _cloud: program  # type: ignore[assignment]
    try:
        plan = render(environment("dev"), Cloud.AWS)
    finally:
        offline.program_for = original
    assert plan.outputs == {"password": SECRET, "plain": "visible"}
    version = plan.of_type("aws:secretsmanager/secretVersion:SecretVersion")[0]
    assert version.inputs["secretString"] == SECRET
    assert "offline-" not in plan.to_json()  # the generated value appears nowhere


def test_an_unanswered_invoke_fails_loudly_with_its_token() -> None:
    def program() -> None:
        import pulumi_aws as aws

        aws.ec2.get_ami_output(most_recent=True, owners=["amazon"])

    from infra.plans.produce import offline

    original = offline.program_for
    offline.program_for = lambda _cloud: program  # type: ignore[assignment]
    try:
        with pytest.raises(RenderError, match=r"aws:ec2/getAmi:getAmi"):
            render(environment("dev"), Cloud.AWS)
    finally:
        offline.program_for = original
    assert "aws:ec2/getAmi:getAmi" not in mocks.INVOKES
    # Nothing the failed program left pending leaks into the next stack rendered in-process.
    assert render(environment("dev"), Cloud.GCP).resources


def test_bad_environment_stops_the_cli_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    result = run_cli("preview", "--env", "qa", "--out", str(tmp_path / "plans"))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: environments: unknown environment 'qa' (known: dev, staging, production)"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "plans").exists()


def test_malformed_plan_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "dev-aws.json"
    bad.write_text(
        '{"environment": "dev", "cloud": "aws", "stack": "s", "mode": "offline", '
        '"resources": [{"urn": 1}]}'
    )
    with pytest.raises(PlanError, match=r"dev-aws.json: key 'resources\[0\].urn'"):
        load_plan(bad)
    bad.write_text("{not json")
    with pytest.raises(PlanError, match="malformed JSON"):
        load_plan(bad)


@pytest.mark.slow
def test_against_ref_reports_created_deleted_and_changed(
    scratch_repo: Callable[[], Path], tmp_path: Path
) -> None:
    repo = scratch_repo()
    settings = repo / "environments/staging/settings.toml"
    text = settings.read_text()
    # Three AZs instead of two: new subnets and routes; a wider flow-log retention: a change.
    settings.write_text(
        text.replace("[aws]\n", "[aws]\navailability_zones = 3\nflow_log_retention_days = 30\n", 1)
    )
    out = tmp_path / "plans"
    result = run_cli(
        "preview",
        "--env",
        "staging",
        "--cloud",
        "aws",
        "--against",
        "HEAD",
        "--out",
        str(out),
        cwd=repo,
        pythonpath=repo,
    )
    assert result.returncode == 0, result.stderr
    report = (out / "report.md").read_text()
    assert "## Changes against `HEAD`" in report
    assert "### staging-aws" in report
    assert "Created: 7" in report  # 3 subnets, 1 route table, 3 associations
    assert "`update` aws:cloudwatch/logGroup:LogGroup network-flow-logs (retentionInDays)" in report
    # The worktree is cleaned up.
    worktrees = git(repo, "worktree", "list").splitlines()
    assert len(worktrees) == 1


@pytest.mark.slow
def test_against_ref_reports_deleted_stateful_resources_first(
    scratch_repo: Callable[[], Path], tmp_path: Path
) -> None:
    repo = scratch_repo()
    network = repo / "infra/aws/network.py"
    text = network.read_text()
    # Rename the flow-log group's logical name: the engine sees a delete and a create.
    assert text.count('f"{name}-flow-logs",') == 1
    network.write_text(text.replace('f"{name}-flow-logs",', 'f"{name}-vpc-flow-logs",'))
    out = tmp_path / "plans"
    args = [
        "preview",
        "--env",
        "production",
        "--cloud",
        "aws",
        "--against",
        "HEAD",
        "--out",
        str(out),
    ]
    result = run_cli(*args, cwd=repo, pythonpath=repo)
    # Production loses a stateful resource: the guard fails the preview.
    assert result.returncode == 1, result.stderr
    report = (out / "report.md").read_text()
    section = report[report.index("### production-aws") :]
    deleted = "`delete` aws:cloudwatch/logGroup:LogGroup network-flow-logs"
    assert section.index("**Stateful resources deleted or replaced:**") < section.index(deleted)
    assert section.index(deleted) < section.index("<details>")
    assert "## Destructive-change guard: FAIL" in report

    urn = next(
        line for line in report.splitlines() if "network-flow-logs" in line and "urn:" in line
    )
    allowed = urn[urn.index("urn:pulumi:") :].split("`")[0].strip()
    result = run_cli(*args, "--allow-replace", allowed, cwd=repo, pythonpath=repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "## Destructive-change guard: pass" in (out / "report.md").read_text()


def test_against_unknown_ref_is_one_clear_error(tmp_path: Path) -> None:
    result = run_cli("preview", "--env", "dev", "--against", "no-such-ref", "--out", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: --against no-such-ref:")
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.json"))
