"""The drift lifecycle, whole: drift found -> issue -> promotion refused -> fixed -> closed ->
drift again -> the same issue reopened; an unchecked stack is unknown; an undeployed merge is
told apart. Drift checks read saved `pulumi preview --json` outputs; GitHub is the fake."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra.cli import main
from infra.git import git
from tests.infra.delivery.conftest import Remote
from tests.infra.delivery.fake_github import APP_TOKEN, FakeGitHub

DATA = Path(__file__).parents[1] / "plans" / "data"
MARK_AWS = "<!-- billing-drift:production-aws -->"


def check(out: Path, stack: str, preview: str | None) -> None:
    """What a drift job leaves: `nox -s drift -- --from-json` writes <stack>.md; <stack>.exit."""
    out.mkdir(parents=True, exist_ok=True)
    if preview is None:  # the job died before reporting
        for leftover in out.glob(f"{stack}.*"):
            leftover.unlink()
        return
    saved = out / "input" / f"{stack}.json"
    saved.parent.mkdir(exist_ok=True)
    shutil.copy(DATA / preview, saved)
    code = main(["drift", "--from-json", str(saved), "--out", str(out)])
    (out / f"{stack}.exit").write_text(f"{code}\n", encoding="utf-8")


def sync(out: Path, repo: Path) -> None:
    assert (
        main(["drift-issues", "--reports", str(out), "--env", "production", "--repo", str(repo)])
        == 0
    )


def drift_issues(github: FakeGitHub) -> dict[str, dict[str, object]]:
    issues = github.issues_labelled("drift")
    return {str(i["title"]): i for i in issues}


def test_drift_found_issue_refusal_fixed_closed_reopened(
    remote: Remote,
    github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    github.git_dir = remote.bare
    github.add_deployment("production", git(remote.bare, "rev-parse", "production"), "success")
    github.add_deployment("staging", git(remote.bare, "rev-parse", "staging"), "success")
    repo = remote.clone("checkout")
    out = tmp_path / "drift"

    # 1. Drift in production-aws; production-gcp's check never reported.
    check(out, "production-aws", "drift_production_aws.json")
    check(out, "production-gcp", None)
    sync(out, repo)
    issues = drift_issues(github)
    aws, gcp = issues["Drift: production-aws"], issues["Drift: production-gcp"]
    assert aws["state"] == "open"
    assert MARK_AWS in str(aws["body"])
    assert "State: **drift**" in str(aws["body"])
    assert "**Drift found**" in str(aws["body"])
    assert "State: **unknown**" in str(gcp["body"])  # unknown, never skipped
    assert "not deployed yet" not in str(aws["body"])  # the branch is what is deployed

    # 2. The same drift again: the same issue, no duplicate, no new notification.
    sync(out, repo)
    assert len(github.issues_labelled("drift")) == 2
    assert github.comments_on(int(str(aws["number"]))) == []

    # 3. Promotion into production is refused while drift is open, unless overridden.
    monkeypatch.setenv("PROMOTION_TOKEN", APP_TOKEN)
    remote.commit_to("staging", {"infra/app.py": "VERSION = 2\n"}, "staging: code")
    git(repo, "fetch", "--quiet", "origin")
    argv = [
        "promote",
        "--from",
        "staging",
        "--to",
        "production",
        "--repo",
        str(repo),
        "--no-preview",
        "--open-pr",
        "--body",
        str(tmp_path / "body.md"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "production has open drift issues: production-aws (#1), production-gcp (#2)" in err
    assert github.pulls() == []
    assert main([*argv, "--override-drift", "INC-9: drift is the known WAF rule edit"]) == 0
    [pull] = github.pulls()
    assert "Promoted despite open drift in production-aws (#1), production-gcp (#2): INC-9" in str(
        pull["body"]
    )

    # 4. Fixed: both clean; both issues closed with a comment.
    check(out, "production-aws", "clean_production_aws.json")
    check(out, "production-gcp", "clean_production_aws.json")
    sync(out, repo)
    issues = drift_issues(github)
    assert {str(i["state"]) for i in issues.values()} == {"closed"}
    assert "No drift" in github.comments_on(int(str(aws["number"])))[-1]["body"]

    # 5. Drift again: the closed issue is reopened, not duplicated, and people are notified.
    check(out, "production-aws", "drift_production_aws.json")
    sync(out, repo)
    issues = drift_issues(github)
    assert len(issues) == 2
    assert issues["Drift: production-aws"]["state"] == "open"
    assert issues["Drift: production-aws"]["number"] == aws["number"]
    assert "Drift found" in github.comments_on(int(str(aws["number"])))[-1]["body"]
    assert issues["Drift: production-gcp"]["state"] == "closed"


def test_a_merge_not_yet_deployed_is_told_apart(
    remote: Remote, github: FakeGitHub, tmp_path: Path
) -> None:
    github.add_deployment("production", git(remote.bare, "rev-parse", "production"), "success")
    settings = remote.read("production", "environments/production/settings.toml")
    remote.commit_to(
        "production",
        {
            "environments/production/settings.toml": settings.replace(
                "max_tasks = 10", "max_tasks = 12", 1
            )
            + "\n"
        },
        "production: scale out",
    )
    repo = remote.clone("checkout")
    out = tmp_path / "drift"
    check(out, "production-aws", "drift_production_aws.json")
    check(out, "production-gcp", "clean_production_aws.json")
    sync(out, repo)
    issues = drift_issues(github)
    body = str(issues["Drift: production-aws"]["body"])
    assert "commits touching this stack that are not deployed yet" in body
    assert "Drift: production-gcp" not in issues  # clean and never open: no issue at all


def test_a_failed_deploy_opens_one_issue_until_it_succeeds(
    github: FakeGitHub, tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    error = "error: aws:rds/instance:Instance billing-dev-db: InvalidParameterCombination"
    log.write_text("Deploying dev-aws ...\n" + "noise\n" * 500 + error + "\n", encoding="utf-8")
    argv = ["delivery-issue", "--kind", "deploy", "--key", "dev-aws", "--log", str(log)]
    assert main([*argv, "--outcome", "failure", "--commit", "a" * 40]) == 0
    [issue] = github.issues_labelled("deploy-failure")
    assert issue["title"] == "Deploy failed: dev-aws"
    assert "InvalidParameterCombination" in str(issue["body"])
    assert "[this run](https://github.com/example-org/billing/actions/runs/4242)" in str(
        issue["body"]
    )
    assert str(issue["body"]).count("noise") == 79  # the end of the log, not all of it

    assert main([*argv, "--outcome", "failure", "--commit", "b" * 40]) == 0
    assert len(github.issues_labelled("deploy-failure")) == 1
    assert (
        "Failed again at `bbbbbbbbbbbb`"
        in github.comments_on(int(str(issue["number"])))[-1]["body"]
    )

    assert main([*argv, "--outcome", "success", "--commit", "c" * 40]) == 0
    assert issue["state"] == "closed"
    # Another stack, or a promotion, has its own issue.
    assert (
        main(
            [
                "delivery-issue",
                "--kind",
                "promotion",
                "--key",
                "dev-to-staging",
                "--outcome",
                "failure",
            ]
        )
        == 0
    )
    assert [i["title"] for i in github.issues_labelled("promotion-failure")] == [
        "Promotion failed: dev-to-staging"
    ]
