"""The GitHub workflows: every action pinned by commit SHA, and the hardening rules kept."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from infra.settings import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))
PINNED = re.compile(r"^[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-/]+@[0-9a-f]{40}$")
# PyYAML comes with the Pulumi SDK; it ships no type stubs.
yaml: Any = importlib.import_module("yaml")
EXPECTED = {
    "ci",
    "preview",
    "deploy",
    "promote",
    "drift",
    "services",
    "rollback",
    "engine",
    "freeze",
}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    found = workflow.get("on", workflow.get(True))
    return found if isinstance(found, dict) else {str(found): None}


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (job_id, step) for job_id, job in workflow["jobs"].items() for step in job.get("steps", [])
    ]


def all_uses(workflow: dict[str, Any]) -> list[str]:
    found = [step["uses"] for _, step in steps(workflow) if "uses" in step]
    return found + [job["uses"] for job in workflow["jobs"].values() if "uses" in job]


def test_every_workflow_is_there() -> None:
    assert {p.stem for p in WORKFLOWS} == EXPECTED


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_full_commit_sha(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    uses = all_uses(load(path))
    assert uses
    for ref in uses:
        if ref.startswith("./"):
            continue  # a workflow of this repository, at this commit
        assert PINNED.fullmatch(ref), f"{path.name}: {ref} is not pinned by a 40-hex commit SHA"
        # The tag the SHA stands for is written beside it.
        assert re.search(re.escape(ref) + r" # v\d+(\.\d+)*\s*$", text, re.MULTILINE), ref


def test_the_pin_check_catches_a_tag() -> None:
    assert not PINNED.fullmatch("actions/checkout@v4")
    assert not PINNED.fullmatch("actions/checkout@11bd719")
    assert PINNED.fullmatch("actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_hardening(path: Path) -> None:
    workflow = load(path)
    text = path.read_text(encoding="utf-8")
    assert workflow["permissions"] == {}, "no default token permissions"
    assert "pull_request_target" not in triggers(workflow)
    assert "pull_request_target" not in text
    for job_id, job in workflow["jobs"].items():
        if "uses" not in job:  # a reusable workflow's call sets its own timeouts
            assert isinstance(job.get("timeout-minutes"), int), f"{job_id} has no timeout"
        assert "permissions" in job, f"{job_id} grants no explicit permissions"
    for job_id, step in steps(workflow):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False, job_id
        # Values reach scripts only through env:, never by ${{ }} expansion inside run:.
        assert "${{" not in step.get("run", ""), f"{job_id}: expression inside run:"
    # Every permission granted to a job says why.
    for line in text.splitlines():
        if re.fullmatch(r"\s+[a-z-]+: (read|write)\s*(#.*)?", line):
            assert re.search(r"# \S", line), f"{path.name}: no reason for `{line.strip()}`"
    # OIDC only: no long-lived cloud keys.
    for word in ("aws-access-key-id", "aws-secret-access-key", "credentials_json"):
        assert word not in text


def test_deploy_applies_the_reviewed_plan_and_never_cancels_up() -> None:
    deploy = load(REPO_ROOT / ".github" / "workflows" / "deploy.yml")
    # Serialized per environment branch at workflow level; a running deploy is never cancelled.
    assert deploy["concurrency"] == {
        "group": "deploy-${{ github.ref_name }}",
        "cancel-in-progress": False,
    }
    up = deploy["jobs"]["up"]
    assert up["concurrency"]["cancel-in-progress"] is False
    assert "matrix.stack" in up["concurrency"]["group"]
    assert up["environment"] == "${{ matrix.environment }}"
    assert up["needs"] == ["decide", "plan"]
    # Only the stacks deploy-plan kept run: a push that changes no stack asks for no approval.
    assert up["strategy"]["matrix"] == "${{ fromJSON(needs.decide.outputs.matrix) }}"
    assert deploy["jobs"]["plan"]["if"] == "needs.decide.outputs.any == 'true'"
    runs = "\n".join(step.get("run", "") for step in up["steps"])
    assert "nox -s up" in runs
    assert "--plan" in runs
    plan = deploy["jobs"]["plan"]
    downloads = [s for s in plan["steps"] if s.get("uses", "").startswith("actions/download-art")]
    assert downloads[0]["if"] == "matrix.action == 'apply'"
    assert downloads[0]["with"]["run-id"] == "${{ matrix.run_id }}"  # the PR's preview run
    plan_runs = "\n".join(step.get("run", "") for step in plan["steps"])
    assert "--save-plan" in plan_runs
    assert up["permissions"]["id-token"] == "write"
    # Break-glass comes from deploy-plan (an approver), never from commit messages.
    text = (REPO_ROOT / ".github" / "workflows" / "deploy.yml").read_text(encoding="utf-8")
    assert "git log" not in text
    assert "needs.decide.outputs.break-glass" in text


def test_ci_needs_no_secrets() -> None:
    text = (REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    assert "secrets." not in text
    assert "id-token" not in text


@pytest.mark.parametrize("name", ["promote", "rollback"])
def test_release_pull_requests_are_opened_with_the_app_token(name: str) -> None:
    # A PR opened with GITHUB_TOKEN starts no workflow, so no check would report on it
    # (https://docs.github.com/actions/using-workflows/triggering-a-workflow).
    path = next(p for p in WORKFLOWS if p.stem == name)
    workflow = load(path)
    uses = all_uses(workflow)
    assert any(u.startswith("actions/create-github-app-token@") for u in uses)
    runs = [step for _, step in steps(workflow) if f"nox -s {name} " in step.get("run", "")]
    assert len(runs) == 1
    env = runs[0]["env"]
    assert env["PROMOTION_TOKEN"] == "${{ steps.app.outputs.token }}"
    assert not {"GITHUB_TOKEN", "GH_TOKEN"} & set(env)
    # The job's own token writes nothing but issues: pushes and pull requests go through the App.
    for job in workflow["jobs"].values():
        assert job["permissions"]["contents"] == "read"
        assert set(job["permissions"]) <= {"contents", "issues"}


def test_the_pin_pull_request_is_opened_with_the_app_token() -> None:
    workflow = load(REPO_ROOT / ".github" / "workflows" / "services.yml")
    pin = workflow["jobs"]["pin"]
    assert pin["permissions"] == {"contents": "read"}
    [opener] = [s for s in pin["steps"] if "gh pr create" in s.get("run", "")]
    assert opener["env"]["GH_TOKEN"] == "${{ steps.app.outputs.token }}"
