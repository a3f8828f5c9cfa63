"""Promotion moves a release (the deployed commit), opened with a GitHub App token; rollback
restores the previous release's pins. Real git repositories, GitHub's API faked on 127.0.0.1."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from infra.cli import main
from infra.delivery.promote import RELEASE_TRAILER, PromotionError, promote
from infra.git import git, run
from tests.infra.delivery.conftest import Remote
from tests.infra.delivery.fake_github import APP_TOKEN, WORKFLOW_TOKEN, FakeGitHub

DEV_PINS = "environments/dev/pins.toml"
STAGING_PINS = "environments/staging/pins.toml"
PROD_PINS = "environments/production/pins.toml"
API = "ghcr.io/example-org/billing-api"


def _set_api(remote: Remote, branch: str, path: str, version: str) -> str:
    text = remote.read(branch, path)
    old = next(line for line in text.splitlines() if line.startswith("api = "))
    return remote.commit_to(
        branch,
        {path: text.replace(old, f'api = "{API}:{version}"') + "\n"},
        f"{branch}: api {version}",
    )


def test_a_change_to_infra_code_alone_is_promoted(remote: Remote, tmp_path: Path) -> None:
    sha = remote.commit_to("dev", {"infra/network.py": "CIDR = '10.0.0.0/16'\n"}, "infra only")
    repo = remote.clone("checkout")

    result = promote("dev", "staging", repo=repo, body_path=tmp_path / "b.md", preview=False)

    assert result.changes == []  # the pins are equal ...
    assert result.code_commits == 1  # ... and the code still moves
    assert result.release == sha
    assert git(repo, "show", f"{result.commit}:infra/network.py") == "CIDR = '10.0.0.0/16'"
    message = git(repo, "log", "-1", "--format=%B", result.commit)
    assert f"{RELEASE_TRAILER}: {sha}" in message
    assert f"Release: `{sha}`, the commit deployed to dev" in (tmp_path / "b.md").read_text()
    # Once staging has it, there is nothing left to promote.
    git(repo, "push", "--quiet", "origin", f"{result.branch}:staging")
    git(repo, "fetch", "--quiet", "origin")
    with pytest.raises(PromotionError, match="already runs dev's release"):
        promote("dev", "staging", repo=repo, body_path=tmp_path / "c.md", preview=False)


def test_the_deployed_commit_is_promoted_not_the_branch_tip(
    remote: Remote, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deployed = _set_api(remote, "dev", DEV_PINS, "0.2.0")
    github.add_deployment("dev", deployed, "success")
    # Merged after the deploy, or its deploy failed: not a release yet.
    tip = _set_api(remote, "dev", DEV_PINS, "0.3.0")
    github.add_deployment("dev", tip, "failure")
    github.git_dir = remote.bare
    repo = remote.clone("checkout")
    monkeypatch.setenv("PROMOTION_TOKEN", APP_TOKEN)

    argv = [
        "promote",
        "--from",
        "dev",
        "--to",
        "staging",
        "--repo",
        str(repo),
        "--no-preview",
        "--from-deployment",
        "--open-pr",
        "--body",
        str(tmp_path / "body.md"),
    ]
    assert main(argv) == 0

    staging_pins = tomllib.loads(remote.read("promote/dev-to-staging", STAGING_PINS))
    assert staging_pins["images"]["api"] == f"{API}:0.2.0"
    branch_commit = git(remote.bare, "rev-parse", "promote/dev-to-staging")
    # The deployed commit is in the promotion branch; the newer tip is not.
    assert run(remote.bare, "merge-base", "--is-ancestor", deployed, branch_commit).returncode == 0
    assert run(remote.bare, "merge-base", "--is-ancestor", tip, branch_commit).returncode == 1
    [pull] = github.pulls()
    assert (pull["head"]["ref"], pull["base"]["ref"]) == ("promote/dev-to-staging", "staging")
    assert pull["head"]["sha"] == branch_commit
    assert pull["title"] == f"Promote dev to staging ({deployed[:12]})"
    # Opened with the App token, so CI, the preview and the required checks run on it.
    assert pull["opened_with"] == APP_TOKEN
    assert pull["triggers_workflows"]

    # The next run updates the same pull request instead of opening a second one.
    assert main(argv) == 0
    assert len(github.pulls()) == 1


def test_promotion_prs_refuse_the_workflow_token(
    remote: Remote,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _set_api(remote, "dev", DEV_PINS, "0.2.0")
    repo = remote.clone("checkout")
    monkeypatch.delenv("PROMOTION_TOKEN", raising=False)
    assert (
        main(
            [
                "promote",
                "--from",
                "dev",
                "--to",
                "staging",
                "--repo",
                str(repo),
                "--no-preview",
                "--open-pr",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "PROMOTION_TOKEN is not set" in err
    assert "triggers no workflow" in err
    assert github.pulls() == []
    assert git(remote.bare, "branch", "--list", "promote/*") == ""
    # The fake marks what GitHub does with a PR opened by the workflow token: no workflow runs.
    from infra.delivery.github import Connection, repository

    conn = Connection(github.url, github.full_name, WORKFLOW_TOKEN)
    repository(conn).create_pull(base="staging", head="dev", title="t", body="b")
    assert not github.pulls()[0]["triggers_workflows"]


def test_rollback_restores_the_previous_release_pins(
    remote: Remote, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = _set_api(remote, "production", PROD_PINS, "0.2.0")
    github.add_deployment("production", first, "success")
    github.add_deployment("production", first, "success")  # the other cloud's job
    second = _set_api(remote, "production", PROD_PINS, "0.3.0")
    github.add_deployment("production", second, "success")
    settings = remote.read("production", "environments/production/settings.toml")
    sized = remote.commit_to(
        "production",
        {
            "environments/production/settings.toml": settings.replace(
                "max_tasks = 10", "max_tasks = 12", 1
            )
            + "\n"
        },
        "production: scale out",
    )
    github.add_deployment("production", sized, "success")
    github.git_dir = remote.bare
    repo = remote.clone("checkout")
    monkeypatch.setenv("PROMOTION_TOKEN", APP_TOKEN)

    assert (
        main(
            [
                "rollback",
                "--env",
                "production",
                "--repo",
                str(repo),
                "--no-preview",
                "--open-pr",
                "--body",
                str(tmp_path / "body.md"),
            ]
        )
        == 0
    )

    restored = tomllib.loads(remote.read("rollback/production", PROD_PINS))
    assert restored["images"]["api"] == f"{API}:0.2.0"
    # Only the pins go back: the later sizing change stays.
    assert "max_tasks = 12" in remote.read(
        "rollback/production", "environments/production/settings.toml"
    )
    changed = git(remote.bare, "diff", "--name-only", "production", "rollback/production")
    assert changed == PROD_PINS
    [pull] = github.pulls()
    assert (pull["head"]["ref"], pull["base"]["ref"]) == ("rollback/production", "production")
    assert pull["triggers_workflows"]
    assert f"| `images.api` | `{API}:0.3.0` | `{API}:0.2.0` |" in pull["body"]
    assert first in pull["body"]


def test_rollback_without_an_earlier_release_is_refused(
    remote: Remote,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    only = _set_api(remote, "production", PROD_PINS, "0.2.0")
    github.add_deployment("production", only, "success")
    repo = remote.clone("checkout")
    monkeypatch.setenv("PROMOTION_TOKEN", APP_TOKEN)
    assert main(["rollback", "--env", "production", "--repo", str(repo), "--no-preview"]) == 1
    assert "no earlier deployment with other pins" in capsys.readouterr().err
    assert git(repo, "branch", "--list", "rollback/*") == ""


@pytest.mark.slow
def test_rollback_body_carries_the_preview_and_verdicts(
    remote_with_code: Remote, tmp_path: Path
) -> None:
    remote = remote_with_code
    first = git(remote.bare, "rev-parse", "production")
    second = _set_api(remote, "production", PROD_PINS, "0.3.0")
    repo = remote.clone("checkout")
    body = tmp_path / "body.md"
    assert (
        main(
            [
                "rollback",
                "--env",
                "production",
                "--repo",
                str(repo),
                "--body",
                str(body),
                "--deployed",
                second,
                "--deployed",
                first,
            ]
        )
        == 0
    )
    text = body.read_text()
    assert "## Changes against" in text
    assert "## Policy: pass" in text
    assert "## Destructive-change guard: pass" in text


def test_a_production_hotfix_flows_back_to_staging_and_dev(
    remote: Remote, github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    github.git_dir = remote.bare
    monkeypatch.setenv("PROMOTION_TOKEN", APP_TOKEN)
    fix = remote.commit_to("production", {"infra/fix.py": "RETRIES = 3\n"}, "hotfix: retries")
    _set_api(remote, "production", PROD_PINS, "0.2.1")  # production's own pin stays its own
    repo = remote.clone("checkout")

    assert (
        main(
            [
                "backport",
                "--from",
                "production",
                "--to",
                "staging",
                "--repo",
                str(repo),
                "--open-pr",
            ]
        )
        == 0
    )
    assert remote.read("backport/production-to-staging", "infra/fix.py") == "RETRIES = 3"
    # Staging's directory is staging's: the hotfix's production pins do not leak into it.
    changed = git(remote.bare, "diff", "--name-only", "staging", "backport/production-to-staging")
    assert changed.splitlines() == ["environments/production/pins.toml", "infra/fix.py"]
    [pull] = github.pulls()
    assert (pull["base"]["ref"], pull["triggers_workflows"]) == ("staging", True)

    # Merged into staging; then staging's back-merge carries it on to dev.
    git(repo, "fetch", "--quiet", "origin")
    git(
        repo,
        "push",
        "--quiet",
        "origin",
        "origin/backport/production-to-staging:refs/heads/staging",
    )
    git(repo, "fetch", "--quiet", "origin")
    assert main(["backport", "--from", "staging", "--to", "dev", "--repo", str(repo)]) == 0
    branch_commit = git(repo, "rev-parse", "backport/staging-to-dev")
    assert git(repo, "merge-base", "--is-ancestor", fix, branch_commit) == ""
    # Back-merges go upstream only, and only when there is something to bring back.
    assert main(["backport", "--from", "dev", "--to", "staging", "--repo", str(repo)]) == 1
    git(repo, "push", "--quiet", "origin", f"{branch_commit}:refs/heads/dev")
    git(repo, "fetch", "--quiet", "origin")
    assert main(["backport", "--from", "staging", "--to", "dev", "--repo", str(repo)]) == 1
