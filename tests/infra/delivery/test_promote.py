"""The promotion flow in real git repositories: dev -> staging -> production, and every refusal."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from infra.cli import main
from infra.delivery.promote import PromotionError, check_order, pin_changes, promote
from infra.git import git
from tests.infra.delivery.conftest import Remote, snapshot

DEV_PINS = "environments/dev/pins.toml"
NEW_API = "ghcr.io/example-org/billing-api:0.2.0@sha256:" + "0" * 62 + "21"
OLD_API = "ghcr.io/example-org/billing-api:0.1.0@sha256:" + "0" * 63 + "1"
FROZEN_AT = dt.datetime(2026, 12, 24, 12, 0, tzinfo=dt.UTC)
FREEZE = """
[[freeze]]
start = 2026-12-20T00:00:00Z
end = 2027-01-04T00:00:00Z
reason = "end-of-year billing run"
"""


def bump_dev(remote: Remote) -> None:
    """A release reaches dev: new API image and provider, and an edit of staging sizing."""
    pins = (
        remote.read("dev", DEV_PINS)
        .replace(OLD_API, NEW_API)
        .replace('pulumi-aws = "7.51.1"', 'pulumi-aws = "7.52.0"')
    )
    staging_settings = remote.read("dev", "environments/staging/settings.toml").replace(
        "max_tasks = 5", "max_tasks = 50", 1
    )
    remote.commit_to(
        "dev",
        {
            DEV_PINS: pins + "\n",
            "environments/staging/settings.toml": staging_settings + "\n",
            "services.txt": "api 0.2.0\n",
        },
        "release api 0.2.0",
    )


def changed_paths(repo: Path, old: str, new: str) -> list[str]:
    return git(repo, "diff", "--name-only", old, new).splitlines()


def test_dev_to_staging_to_production_moves_pins_only(remote: Remote, tmp_path: Path) -> None:
    bump_dev(remote)
    repo = remote.clone("checkout")
    before = snapshot(repo)
    body = tmp_path / "body-staging.md"

    result = promote("dev", "staging", repo=repo, body_path=body, preview=False, now=FROZEN_AT)

    assert result.branch == "promote/dev-to-staging"
    assert [c.key for c in result.changes] == ["images.api", "python.pulumi-aws"]
    commit = git(repo, "rev-parse", result.branch)
    assert commit == result.commit
    # A merge of dev into staging, built without moving the checkout.
    parents = git(repo, "rev-list", "--parents", "-n", "1", commit).split()[1:]
    assert parents == [
        git(repo, "rev-parse", "origin/staging"),
        git(repo, "rev-parse", "origin/dev"),
    ]
    after = snapshot(repo)
    assert (after.head, after.symbolic, after.status, after.worktrees) == (
        before.head,
        before.symbolic,
        before.status,
        before.worktrees,
    )
    # In staging's directory only the pins move; the dev branch's edit of staging sizing stays out.
    staging_changes = [
        p
        for p in changed_paths(repo, "origin/staging", commit)
        if p.startswith("environments/staging/")
    ]
    assert staging_changes == ["environments/staging/pins.toml"]
    assert git(repo, "show", f"{commit}:environments/staging/pins.toml") == git(
        repo, "show", f"origin/dev:{DEV_PINS}"
    )
    assert (
        "max_tasks = 5\n"
        in git(repo, "show", f"{commit}:environments/staging/settings.toml") + "\n"
    )
    # The rest of the merge arrives (code from dev).
    assert git(repo, "show", f"{commit}:services.txt") == "api 0.2.0"
    message = git(repo, "log", "-1", "--format=%B", commit)
    assert message.startswith("Promote dev to staging")
    assert f"- images.api: {OLD_API} -> {NEW_API}" in message
    assert "- python.pulumi-aws: 7.51.1 -> 7.52.0" in message
    text = body.read_text()
    assert f"| `images.api` | `{OLD_API}` | `{NEW_API}` |" in text
    assert "| `python.pulumi-aws` | `7.51.1` | `7.52.0` |" in text

    # The PR merges: staging now runs dev's pins; promote on to production.
    git(repo, "push", "--quiet", "origin", f"{result.branch}:staging")
    git(repo, "fetch", "--quiet", "origin")
    to_prod = promote(
        "staging", "production", repo=repo, body_path=tmp_path / "b.md", preview=False
    )
    prod_commit = to_prod.commit
    prod_changes = [
        p
        for p in changed_paths(repo, "origin/production", prod_commit)
        if p.startswith("environments/production/")
    ]
    assert prod_changes == ["environments/production/pins.toml"]
    prod_pins = tomllib.loads(git(repo, "show", f"{prod_commit}:environments/production/pins.toml"))
    assert prod_pins["images"]["api"] == NEW_API
    assert prod_pins["python"]["pulumi-aws"] == "7.52.0"
    # Production's sizing is production's: the merge did not bring staging's.
    assert git(repo, "show", f"{prod_commit}:environments/production/settings.toml") == git(
        repo, "show", "origin/production:environments/production/settings.toml"
    )
    assert git(repo, "rev-parse", "HEAD") == before.head


def assert_refused(repo: Path, match: str, **kwargs: object) -> None:
    before = snapshot(repo)
    source = str(kwargs.pop("source", "dev"))
    target = str(kwargs.pop("target", "staging"))
    body = repo.parent / "refused-body.md"
    with pytest.raises(PromotionError, match=match) as raised:
        promote(source, target, repo=repo, body_path=body, preview=False, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)
    assert snapshot(repo) == before
    assert not body.exists()


def test_refuses_a_dirty_checkout(remote: Remote) -> None:
    bump_dev(remote)
    repo = remote.clone("checkout")
    (repo / "README.md").write_text("edited\n", encoding="utf-8")
    assert_refused(repo, "uncommitted changes")
    (repo / "README.md").write_text(remote.read("dev", "README.md") + "\n", encoding="utf-8")
    (repo / "notes.md").write_text("untracked\n", encoding="utf-8")
    assert_refused(repo, r"uncommitted changes \(1 paths, first: notes.md\)")


@pytest.mark.parametrize(
    ("source", "target", "match"),
    [
        (
            "dev",
            "production",
            "dev is not production's upstream: production takes changes from staging",
        ),
        ("staging", "dev", "dev is first in the promotion order"),
        ("production", "staging", "production is not staging's upstream"),
        ("dev", "qa", "unknown environment 'qa'"),
    ],
)
def test_refuses_out_of_order(remote: Remote, source: str, target: str, match: str) -> None:
    bump_dev(remote)
    repo = remote.clone("checkout")
    assert_refused(repo, match, source=source, target=target)
    with pytest.raises(PromotionError, match=match):
        check_order(source, target)


def test_refuses_when_pins_are_already_equal(remote: Remote) -> None:
    repo = remote.clone("checkout")
    assert_refused(repo, "staging already runs dev's release")


def test_refuses_a_merge_conflict(remote: Remote) -> None:
    bump_dev(remote)
    remote.commit_to("dev", {"README.md": "# billing platform\n\nDev's text.\n"}, "dev readme")
    remote.commit_to("staging", {"README.md": "# billing platform\n\nStaging's text.\n"}, "hotfix")
    repo = remote.clone("checkout")
    assert_refused(repo, r"merging origin/dev into origin/staging conflicts in README.md")


def test_refuses_a_frozen_target_unless_break_glass(remote: Remote, tmp_path: Path) -> None:
    bump_dev(remote)
    settings = remote.read("staging", "environments/staging/settings.toml") + "\n" + FREEZE
    remote.commit_to("staging", {"environments/staging/settings.toml": settings}, "freeze")
    repo = remote.clone("checkout")
    assert_refused(
        repo,
        r"staging is in a change freeze .*end-of-year billing run.*--break-glass",
        now=FROZEN_AT,
    )
    assert_refused(repo, "change freeze", now=FROZEN_AT, break_glass="  ")

    # Outside the window the same promotion goes ahead.
    after_freeze = dt.datetime(2027, 1, 4, 0, 0, tzinfo=dt.UTC)
    body = tmp_path / "body.md"
    promote("dev", "staging", repo=repo, body_path=body, preview=False, now=after_freeze)
    git(repo, "branch", "-D", "promote/dev-to-staging")

    result = promote(
        "dev",
        "staging",
        repo=repo,
        body_path=body,
        preview=False,
        now=FROZEN_AT,
        break_glass="INC-42 card payments failing",
    )
    message = git(repo, "log", "-1", "--format=%B", result.commit)
    assert (
        "Break-glass: INC-42 card payments failing (overrides: staging is in a change freeze"
        in message
    )
    assert "INC-42 card payments failing" in body.read_text()
    # The freeze itself stays in staging's settings.
    assert "end-of-year billing run" in git(
        repo, "show", f"{result.commit}:environments/staging/settings.toml"
    )


def test_rebuilds_an_existing_promotion_branch(remote: Remote, tmp_path: Path) -> None:
    bump_dev(remote)
    repo = remote.clone("checkout")
    first = promote("dev", "staging", repo=repo, body_path=tmp_path / "b.md", preview=False)
    pins = remote.read("dev", DEV_PINS).replace(
        NEW_API, "ghcr.io/example-org/billing-api:0.3.0@sha256:" + "0" * 62 + "31"
    )
    remote.commit_to("dev", {DEV_PINS: pins + "\n"}, "release api 0.3.0")
    git(repo, "fetch", "--quiet", "origin")
    second = promote("dev", "staging", repo=repo, body_path=tmp_path / "b.md", preview=False)
    assert second.commit != first.commit
    assert git(repo, "rev-parse", "promote/dev-to-staging") == second.commit
    assert "billing-api:0.3.0" in git(
        repo, "show", f"{second.commit}:environments/staging/pins.toml"
    )


def test_pin_changes_name_added_and_removed_pins() -> None:
    changes = pin_changes({"a": "1", "b": "2"}, {"b": "3", "c": "4"})
    assert [c.line() for c in changes] == ["a: 1 -> (none)", "b: 2 -> 3", "c: (none) -> 4"]


def test_cli_promote_reports_one_line_and_exit_1(
    remote: Remote, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = remote.clone("checkout")
    before = snapshot(repo)
    code = main(
        ["promote", "--from", "dev", "--to", "staging", "--repo", str(repo), "--no-preview"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: staging already runs dev's release")
    assert err.count("\n") == 1
    assert snapshot(repo) == before


def test_cli_promote_builds_the_branch_and_body(
    remote: Remote, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bump_dev(remote)
    repo = remote.clone("checkout")
    body = tmp_path / "pr.md"
    code = main(
        [
            "promote",
            "--from",
            "dev",
            "--to",
            "staging",
            "--repo",
            str(repo),
            "--no-preview",
            "--body",
            str(body),
            "--now",
            "2026-12-24T12:00:00+00:00",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Built promote/dev-to-staging" in out
    assert f"images.api: {OLD_API} -> {NEW_API}" in out
    assert body.read_text().startswith("# Promote dev to staging")
    assert main(["promote", "--from", "dev", "--to", "staging", "--now", "yesterday"]) == 1
    assert "--now yesterday: not an ISO 8601" in capsys.readouterr().err


@pytest.mark.slow
def test_body_carries_the_offline_preview_of_the_target(
    remote_with_code: Remote, tmp_path: Path
) -> None:
    bump_dev(remote_with_code)
    repo = remote_with_code.clone("checkout")
    body = tmp_path / "body.md"
    promote("dev", "staging", repo=repo, body_path=body)
    text = body.read_text()
    assert "\n## Preview report\n" in text
    assert "| staging-aws | offline |" in text
    assert "| staging-gcp | offline |" in text
    assert "## Changes against `origin/staging`" in text
    assert "### staging-aws" in text
    # The policy, destructive-change guard and cost verdicts follow the diff.
    for title in ("### Policy: pass", "### Destructive-change guard: pass", "### Monthly cost:"):
        assert title in text
    # The new API image reaches both clouds' API workloads.
    assert "`update` aws:ecs/taskDefinition:TaskDefinition compute-api-task" in text
    assert "`update` gcp:cloudrunv2/service:Service workloads-api (template)" in text
    # No worktree of the renders is left behind.
    assert git(repo, "worktree", "list").count("\n") == 0
