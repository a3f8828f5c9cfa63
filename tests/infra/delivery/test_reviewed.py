"""The reviewed plan is the applied plan, and freezes gate pull requests: whole flows in real git
repositories (a bare origin, environment branches, merges) with GitHub's API faked on 127.0.0.1.

PR -> live preview saves plans (recorded in its comment) -> merge -> deploy applies those plans;
or plans again when the base or the state moved; a push that changes no stack deploys nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infra.cli import main
from infra.git import git
from infra.plans.judge.outcome import StackOutcome, write_results
from tests.infra.delivery.conftest import Remote
from tests.infra.delivery.fake_github import FakeGitHub

FROZEN = "2026-12-24T12:00:00+00:00"
THAWED = "2027-01-05T12:00:00+00:00"
FREEZE = """
[[freeze]]
start = 2026-12-20T00:00:00Z
end = 2027-01-04T00:00:00Z
reason = "end-of-year billing run"
"""


class Flow:
    """A person's and the workflows' steps against the bare remote and the fake GitHub."""

    def __init__(self, remote: Remote, github: FakeGitHub, tmp: Path) -> None:
        self.remote, self.github, self.tmp = remote, github, tmp
        github.git_dir = remote.bare
        self.work = remote.clone("work")

    def branch(self, name: str, base: str, files: dict[str, str]) -> str:
        git(self.work, "fetch", "--quiet", "origin")
        git(self.work, "switch", "--quiet", "-C", name, f"origin/{base}")
        for path, text in files.items():
            (self.work / path).parent.mkdir(parents=True, exist_ok=True)
            (self.work / path).write_text(text, encoding="utf-8")
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "-m", f"{name}: change")
        git(self.work, "push", "--quiet", "--force", "origin", name)
        return git(self.work, "rev-parse", "HEAD")

    def live_preview(self, pr: int, head: str, stacks: list[str], run_id: str) -> None:
        """What preview.yml's comment job does after each stack saved its plan."""
        out = self.tmp / f"preview-{run_id}"
        write_results([StackOutcome(s, mode="live", resources=3) for s in stacks], out)
        env = {"GITHUB_RUN_ID": run_id}
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            assert (
                main(
                    [
                        "comment",
                        "--pr",
                        str(pr),
                        "--results",
                        str(out),
                        "--kind",
                        "live",
                        "--commit",
                        head,
                        "--record-plans",
                    ]
                )
                == 0
            )

    def merge(self, pr: int) -> str:
        """Merge with a merge commit, as the environment branches require."""
        pull = self.github.issues[pr]
        base, head = pull["base"]["ref"], pull["head"]["ref"]
        git(self.work, "fetch", "--quiet", "origin")
        git(self.work, "switch", "--quiet", "-C", base, f"origin/{base}")
        git(self.work, "merge", "--quiet", "--no-ff", "-m", f"Merge #{pr}", f"origin/{head}")
        git(self.work, "push", "--quiet", "origin", base)
        sha = git(self.work, "rev-parse", "HEAD")
        self.github.merge_pull(pr, sha)
        return sha

    def push(self, branch: str, files: dict[str, str]) -> str:
        return self.remote.commit_to(branch, files, f"{branch}: direct push")

    def deploy_plan(self, env: str, after: str, *extra: str) -> dict[str, str]:
        # As deploy.yml checks out the pushed commit.
        git(self.work, "fetch", "--quiet", "origin")
        git(self.work, "switch", "--quiet", "--detach", after)
        out = self.tmp / f"output-{after[:8]}-{len(extra)}"
        assert (
            main(
                [
                    "deploy-plan",
                    "--env",
                    env,
                    "--after",
                    after,
                    "--repo",
                    str(self.work),
                    "--github-output",
                    str(out),
                    *extra,
                ]
            )
            == 0
        )
        lines = out.read_text(encoding="utf-8").splitlines()
        return dict(line.split("=", 1) for line in lines)


def actions(output: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {e["stack"]: (e["action"], e["run_id"]) for e in json.loads(output["matrix"])["include"]}


def test_pr_plan_merge_applies_the_saved_plan_or_plans_again(
    remote: Remote, github: FakeGitHub, tmp_path: Path
) -> None:
    flow = Flow(remote, github, tmp_path)
    github.add_deployment("dev", git(remote.bare, "rev-parse", "dev"), "success")
    settings = remote.read("dev", "environments/dev/settings.toml")

    # 1. PR -> plan -> merge -> apply the saved plan.
    head = flow.branch("feature-a", "dev", {"environments/dev/settings.toml": settings + "\n# a\n"})
    pr = github.add_pull("feature-a", "dev")
    flow.live_preview(pr, head, ["dev-aws", "dev-gcp"], run_id="101")
    merged = flow.merge(pr)
    output = flow.deploy_plan("dev", merged)
    assert actions(output) == {"dev-aws": ("apply", "101"), "dev-gcp": ("apply", "101")}
    assert output["any"] == "true"
    github.add_deployment("dev", merged, "success")

    # 2. The base moved under the PR (another merge touching dev): its plan is stale, plan again.
    head_b = flow.branch(
        "feature-b", "dev", {"environments/dev/settings.toml": settings + "\n# a\n# b\n"}
    )
    pr_b = github.add_pull("feature-b", "dev")
    flow.live_preview(pr_b, head_b, ["dev-aws", "dev-gcp"], run_id="102")
    flow.push("dev", {"infra/extra.py": "X = 1\n"})  # reaches every stack
    github.add_deployment("dev", git(remote.bare, "rev-parse", "dev"), "success")
    merged_b = flow.merge(pr_b)
    output = flow.deploy_plan("dev", merged_b)
    assert actions(output) == {"dev-aws": ("plan", ""), "dev-gcp": ("plan", "")}
    github.add_deployment("dev", merged_b, "success")

    # 3. The state moved: another deploy between the plan and the merge.
    head_c = flow.branch(
        "feature-c",
        "dev",
        {
            "environments/dev/pins.toml": remote.read("dev", "environments/dev/pins.toml")
            + "\n# c\n"
        },
    )
    pr_c = github.add_pull("feature-c", "dev")
    flow.live_preview(pr_c, head_c, ["dev-aws", "dev-gcp"], run_id="103")
    github.add_deployment("dev", merged_b, "success")  # a re-run deploy: same commit, new state
    github.add_deployment("dev", git(remote.bare, "rev-parse", "dev~1"), "success")  # rollback
    merged_c = flow.merge(pr_c)
    output = flow.deploy_plan("dev", merged_c)
    assert {a for a, _ in actions(output).values()} == {"plan"}

    # 4. A push that changes no stack: no `up`, no approval.
    github.add_deployment("dev", merged_c, "success")
    docs = flow.push("dev", {"docs/notes.md": "# notes\n"})
    output = flow.deploy_plan("dev", docs)
    assert output["any"] == "false"
    assert json.loads(output["matrix"]) == {"include": []}


def test_a_direct_push_plans_again(remote: Remote, github: FakeGitHub, tmp_path: Path) -> None:
    flow = Flow(remote, github, tmp_path)
    github.add_deployment("staging", git(remote.bare, "rev-parse", "staging"), "success")
    pushed = flow.push(
        "staging",
        {
            "environments/staging/pins.toml": remote.read(
                "staging", "environments/staging/pins.toml"
            )
            + "\n# hotfix\n"
        },
    )
    assert {a for a, _ in actions(flow.deploy_plan("staging", pushed)).values()} == {"plan"}


def test_freeze_is_a_pr_check_and_only_an_approver_breaks_the_glass(
    remote: Remote, github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = Flow(remote, github, tmp_path)
    settings = remote.read("production", "environments/production/settings.toml")
    flow.push("production", {"environments/production/settings.toml": settings + FREEZE})
    github.add_deployment("production", git(remote.bare, "rev-parse", "production"), "success")
    github.permissions.update({"lead": "maintain", "intern": "read", "oncall": "write"})
    # The check runs the base branch's code and settings (the PR cannot edit its own freeze).
    base = tmp_path / "base"
    shutil.copytree(flow.work, base)
    git(base, "fetch", "--quiet", "origin")
    git(base, "switch", "--quiet", "-C", "production", "origin/production")
    pins = remote.read("production", "environments/production/pins.toml")
    flow.branch("hotfix", "production", {"environments/production/pins.toml": pins + "\n# fix\n"})
    pr = github.add_pull("hotfix", "production")
    check = ["freeze-check", "--env", "production", "--repo", str(base)]

    # Frozen: the required check fails, whatever a commit message says.
    assert main([*check, "--pr", str(pr), "--now", FROZEN]) == 1
    assert "end-of-year billing run" in capsys.readouterr().err
    # An approval that says break-glass, from someone who may not merge: still frozen.
    github.add_review(pr, "intern", "APPROVED", "Break-glass: looks urgent")
    assert main([*check, "--pr", str(pr), "--now", FROZEN]) == 1
    # A comment-only review from an approver does not count either.
    github.add_review(pr, "lead", "COMMENTED", "Break-glass: INC-12 card payments failing")
    assert main([*check, "--pr", str(pr), "--now", FROZEN]) == 1
    capsys.readouterr()
    github.add_review(pr, "lead", "APPROVED", "Break-glass: INC-12 card payments failing")
    assert main([*check, "--pr", str(pr), "--now", FROZEN]) == 0
    assert "INC-12 card payments failing (approved by lead)" in capsys.readouterr().out
    # Outside the window the check passes without anyone.
    assert main([*check, "--now", THAWED]) == 0

    # Merged with the approval: deploy goes through the freeze, recording who approved.
    merged = flow.merge(pr)
    output = flow.deploy_plan("production", merged, "--now", FROZEN)
    assert output["any"] == "true"
    assert output["break-glass"] == "INC-12 card payments failing (approved by lead)"


def test_a_held_deploy_runs_when_the_window_ends(
    remote: Remote, github: FakeGitHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = Flow(remote, github, tmp_path)
    settings = remote.read("production", "environments/production/settings.toml")
    frozen = flow.push("production", {"environments/production/settings.toml": settings + FREEZE})
    github.add_deployment("production", git(remote.bare, "rev-parse", "production~1"), "success")
    github.permissions.update({"oncall": "write", "visitor": "read"})

    # A push during the freeze (no approved PR): held, not failed.
    output = flow.deploy_plan("production", frozen, "--now", FROZEN)
    assert output["any"] == "false"
    assert "deploy held until the window ends" in capsys.readouterr().out
    # A dispatch's break-glass input counts only from someone with write access.
    dispatched = flow.deploy_plan(
        "production", frozen, "--now", FROZEN, "--actor", "oncall", "--break-glass", "INC-13"
    )
    assert dispatched["break-glass"] == "INC-13 (approved by oncall)"
    assert (
        main(
            [
                "deploy-plan",
                "--env",
                "production",
                "--after",
                frozen,
                "--repo",
                str(flow.work),
                "--now",
                FROZEN,
                "--actor",
                "visitor",
                "--break-glass",
                "me",
            ]
        )
        == 1
    )
    assert "visitor may not break the glass" in capsys.readouterr().err

    # The catch-up schedule: nothing while frozen, a deploy dispatched once the window ends.
    assert main(["catch-up", "--repo", str(flow.work), "--env", "production", "--now", FROZEN]) == 0
    assert github.dispatches == []
    assert main(["catch-up", "--repo", str(flow.work), "--env", "production", "--now", THAWED]) == 0
    assert github.dispatches == [("deploy.yml", "production")]
    # Deployed: nothing to catch up.
    github.add_deployment("production", frozen, "success")
    assert main(["catch-up", "--repo", str(flow.work), "--env", "production", "--now", THAWED]) == 0
    assert github.dispatches == [("deploy.yml", "production")]
