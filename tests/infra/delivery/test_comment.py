"""Item 6: a short console, and one PR comment that covers every stack, failed ones included,
stays under GitHub's 65,536-character limit and is edited in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import infra.plans.produce.offline
from infra.cli import main
from infra.delivery.comment import comment_body, marker
from infra.delivery.github import GitHubError, connection, repository, upsert_comment
from infra.plans.judge.outcome import StackOutcome, read_results
from infra.plans.produce.offline import RenderError
from infra.plans.read.model import Plan
from infra.settings import Cloud, EnvironmentSettings
from tests.infra.delivery.fake_github import FakeGitHub

STACKS = [("dev", "aws"), ("dev", "gcp"), ("staging", "aws")]
MATRIX = json.dumps(
    {"include": [{"environment": e, "cloud": c, "stack": f"{e}-{c}"} for e, c in STACKS]}
)


def _pull(github: FakeGitHub) -> int:
    issue = github.add_issue("Change the API", "", [])
    issue["head"], issue["base"] = {"ref": "feature", "sha": "f" * 40}, {"ref": "dev"}
    return int(issue["number"])


@pytest.fixture
def dev_preview(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, Path]:
    """An offline preview of dev in which the GCP stack fails to render."""
    real = infra.plans.produce.offline.render

    def render(env: EnvironmentSettings, cloud: Cloud) -> Plan:
        if cloud is Cloud.GCP:
            raise RenderError("dev-gcp: invoke gcp:organizations/getProject:getProject has no mock")
        return real(env, cloud)

    monkeypatch.setattr(infra.plans.produce.offline, "render", render)
    out = tmp_path / "plans"
    code = main(["preview", "--offline", "--env", "dev", "--out", str(out)])
    return code, capsys.readouterr().out, out


def test_console_is_a_line_per_stack_and_failures_do_not_hide_others(
    dev_preview: tuple[int, str, Path],
) -> None:
    code, printed, out = dev_preview
    lines = printed.strip().splitlines()
    assert code == 1  # a stack that could not be previewed fails the preview
    assert [line for line in lines if line.startswith("dev-")] == [
        next(line for line in lines if line.startswith("dev-aws: ")),
        "dev-gcp: FAILED: dev-gcp: invoke gcp:organizations/getProject:getProject has no mock",
    ]
    assert len(lines) <= 7  # header, a line per stack, policy, guard, cost, report path
    assert "aws:ec2/vpc:Vpc" not in "\n".join(lines)  # the type-by-type listing is report-only
    aws = next(line for line in lines if line.startswith("dev-aws: "))
    assert "resources; no baseline; policy pass; guard not run (no baseline); $" in aws
    assert (out / "dev-aws.json").exists()
    assert not (out / "dev-gcp.json").exists()
    outcomes = {o.stack: o for o in read_results([out])}
    assert outcomes["dev-gcp"].status == "failed"
    assert "getProject" in outcomes["dev-gcp"].error
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| dev-gcp | **preview failed** |" in report


def test_comment_covers_every_stack_and_is_edited_in_place(
    dev_preview: tuple[int, str, Path], github: FakeGitHub
) -> None:
    _, _, out = dev_preview
    pr = _pull(github)
    argv = [
        "comment",
        "--pr",
        str(pr),
        "--results",
        str(out),
        "--report",
        str(out / "report.md"),
        "--expect",
        MATRIX,
        "--commit",
        "a" * 40,
        "--kind",
        "live",
        "--title",
        "Live preview",
    ]

    assert main(argv) == 0
    [first] = github.comments_on(pr)
    body = first["body"]
    assert body.startswith(marker("live"))
    assert f"Commit `{'a' * 12}`" in body
    assert "[workflow run](https://github.com/example-org/billing/actions/runs/4242)" in body
    assert "| dev-aws | ok |" in body
    assert "| dev-gcp | **preview failed** |" in body
    # A stack of the matrix whose job never reported is listed, not dropped.
    assert "| staging-aws | **preview failed** | | | | | no result: the preview job ended" in body
    assert "<details><summary>Full report</summary>" in body

    assert (
        main([*argv[:-6], "--commit", "b" * 40, "--kind", "live", "--title", "Live preview"]) == 0
    )
    [again] = github.comments_on(pr)
    assert again["id"] == first["id"]
    assert f"Commit `{'b' * 12}`" in again["body"]
    # Another kind of comment (the offline one) is its own comment.
    assert main([*argv[:-4], "--kind", "offline", "--title", "Offline preview"]) == 0
    assert len(github.comments_on(pr)) == 2


def test_a_long_report_is_cut_to_fit_and_points_to_the_artifact(github: FakeGitHub) -> None:
    outcomes = [
        StackOutcome(
            f"env{i}-aws",
            resources=100,
            changes={"create": 1, "update": 2, "replace": 0, "delete": 0},
        )
        for i in range(40)
    ]
    report = "\n".join(
        f"- `update` aws:ec2/securityGroup:SecurityGroup sg-{i} (ingress)" for i in range(6000)
    )
    assert len(report) > 300_000
    body = comment_body(
        outcomes,
        f"```\n{report}",
        kind="offline",
        title="Preview",
        commit="c" * 40,
        run_url="https://github.com/x/y/actions/runs/1",
        artifact="preview-report",
    )
    assert len(body) <= 65_536
    assert "the whole report is the run's `preview-report` artifact" in body
    assert all(f"| env{i}-aws | ok |" in body for i in range(40))
    assert body.count("```") % 2 == 0  # the cut closed the open code block

    repo = repository(connection())
    pr = _pull(github)
    upsert_comment(repo, pr, marker("offline"), body)
    assert github.comments_on(pr)[0]["body"] == body
    # The fake refuses what GitHub refuses, so the cut is what made the comment possible.
    with pytest.raises(GitHubError, match="65536"):
        upsert_comment(repo, pr, "<!-- other -->", "x" * 65_537)


def test_missing_token_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_REPOSITORY", "example-org/billing")
    (tmp_path / "results.jsonl").write_text("", encoding="utf-8")
    assert main(["comment", "--pr", "1", "--results", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: GITHUB_TOKEN is not set: no token to call GitHub's API with"
    )


def test_malformed_results_name_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"stack": "dev-aws", "colour": "red"}) + "\n", encoding="utf-8")
    assert main(["comment", "--pr", "1", "--results", str(path), "--print"]) == 1
    err = capsys.readouterr().err
    assert "results.jsonl" in err
    assert "line 1: colour" in err
