"""The real-engine check's local parts: moto, the provider's endpoints, and the step script
(run here against the stand-in CLI; in the engine workflow against the real one)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from infra import engine
from infra.aws.provider import SERVICES, LocalEndpointError, local_endpoint, provider_args
from infra.settings import REPO_ROOT, environment

from .plans.conftest import DATA, Standin

CHANGES = DATA / "preview_dev_aws.json"
DEV_ACCOUNT = "111111111111"
# Program modules (aws.<module>.*) and the provider endpoint each one's calls go to.
ENDPOINTS = {"lb": {"elbv2", "elb"}, "cloudwatch": {"cloudwatch", "cloudwatchlogs"}}


def test_moto_answers_as_the_environments_account() -> None:
    with engine.moto_server(sys.executable, DEV_ACCOUNT) as url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        identity = session.client("sts", endpoint_url=url).get_caller_identity()
        assert identity["Account"] == DEV_ACCOUNT == environment("dev").aws.account_id  # type: ignore[union-attr]
        s3 = session.client("s3", endpoint_url=url)
        s3.create_bucket(Bucket="engine-check")
        assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["engine-check"]


def test_provider_sends_every_service_to_the_local_server() -> None:
    env = environment("dev")
    plain = provider_args(env)
    assert plain.endpoints is None
    assert plain.allowed_account_ids == [DEV_ACCOUNT]
    local = provider_args(env, "http://127.0.0.1:5123/")
    (endpoints,) = local.endpoints  # type: ignore[misc]
    assert {s: getattr(endpoints, s) for s in SERVICES} == dict.fromkeys(
        SERVICES, "http://127.0.0.1:5123"
    )
    assert local.s3_use_path_style is True
    assert local.skip_metadata_api_check is True
    assert local.allowed_account_ids == [DEV_ACCOUNT], "the account guard stays"


def test_every_aws_module_the_program_uses_has_its_endpoint() -> None:
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "infra" / "aws").glob("*.py"))
    # Resource classes and invokes: aws.ec2.Vpc(...), aws.elb.get_service_account(...).
    modules = set(re.findall(r"\baws\.([a-z0-9]+)\.(?:[A-Z]\w*|get_\w+)\(", source))
    assert modules, "the program's modules were found"
    for module in sorted(modules):
        assert ENDPOINTS.get(module, {module}) <= set(SERVICES), module


@pytest.mark.parametrize(
    "value",
    [
        "https://127.0.0.1:5000",
        "http://10.0.0.5:5000",
        "http://moto.example.com:5000",
        "http://127.0.0.1",
    ],
)
def test_a_non_loopback_endpoint_is_refused(value: str) -> None:
    with pytest.raises(LocalEndpointError, match="billing-aws:localEndpoint"):
        local_endpoint(value)


def test_the_check_runs_preview_up_preview_destroy(
    standin: Standin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.set(preview=str(CHANGES))  # creates and updates; after `up`, none
    work = tmp_path / "engine"
    code = engine.main(["--env", "dev", "--work", str(work), "--moto-python", sys.executable])
    assert code == 0, capsys.readouterr().err
    calls = [c for c in standin.calls() if c.command != ["version"]]
    assert [c.command for c in calls] == [
        ["stack", "init"],
        ["config"],
        ["preview"],
        ["up"],
        ["preview"],
        ["destroy"],
    ]
    for call in calls:
        assert Path(call.cwd) == work / "stacks" / "aws"
        assert call.env["PULUMI_BACKEND_URL"] == f"file://{work / 'state'}"
    assert "--expect-no-changes" in calls[4].argv
    assert "--expect-no-changes" not in calls[2].argv
    assert calls[2].program["versions"] == environment("dev").pins.python.model_dump(by_alias=True)
    stack_settings = yaml.safe_load((work / "stacks/aws/Pulumi.dev.yaml").read_text())
    assert re.fullmatch(
        r"http://127\.0\.0\.1:\d+", stack_settings["config"]["billing-aws:localEndpoint"]
    )
    state = json.loads((work / "state/.pulumi/stacks/billing-aws/dev.json").read_text())
    assert state["checkpoint"]["latest"]["resources"] == [], "destroyed"
    assert "dev-aws passed" in capsys.readouterr().out


def test_changes_after_up_fail_the_check(
    standin: Standin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A provider that reports a diff on every preview (an input it normalises).
    standin.set(preview=str(CHANGES), perpetual_diff="network-flow-logs")
    code = engine.main(["--work", str(tmp_path / "engine"), "--moto-python", sys.executable])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: engine check: preview after up reports no changes: ")
    assert "exited 7" in err
    assert not standin.calls_of("destroy")


def test_the_check_needs_the_pinned_cli(
    standin: Standin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.set(version="3.100.0")
    assert engine.main(["--work", str(tmp_path / "engine")]) == 1
    assert "key 'pulumi_cli'" in capsys.readouterr().err
    assert [c.argv for c in standin.calls()] == [["version"]]


def test_the_engine_job_runs_the_check_on_infra_and_pin_changes() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github/workflows/engine.yml").read_text())
    # PyYAML reads the `on:` key as True.
    paths = workflow[True]["pull_request"]["paths"]
    assert {"infra/**", "environments/*/pins.toml"} <= set(paths)
    steps = workflow["jobs"]["engine"]["steps"]
    setup = next(s for s in steps if s.get("uses", "").startswith("pulumi/actions@"))
    assert setup["with"]["pulumi-version"] == "${{ steps.pins.outputs.pulumi-cli }}"
    assert "environments/dev/pins.toml" in next(s for s in steps if s.get("id") == "pins")["run"]
    assert steps[-1]["run"].endswith("nox -s engine")
    assert workflow["permissions"] == {}
