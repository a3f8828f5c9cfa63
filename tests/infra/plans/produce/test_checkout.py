"""Another ref rendered offline by its own code, in a temporary worktree of a real repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.plans.produce.checkout import render_ref
from infra.plans.read.diff import DiffError
from tests.conftest import commit, worktree_count


def _fake_infra(exit_code: int, stderr: str) -> dict[str, str]:
    """A tree whose `python -m infra` fails as a broken render would."""
    script = f"import sys\nsys.stderr.write({stderr!r})\nraise SystemExit({exit_code})\n"
    return {
        "infra/__init__.py": "",
        "infra/__main__.py": script,
        "environments/dev/settings.toml": "",
    }


def test_render_ref_names_the_context_and_the_last_line_and_cleans_up(small_repo: Path) -> None:
    repo = small_repo
    broken = commit(repo, _fake_infra(1, "Traceback ...\nerror: dev: the render broke\n"), "x")
    expected = r"^--against x: rendering failed: error: dev: the render broke$"
    with pytest.raises(DiffError, match=expected):
        render_ref(repo, broken, ["dev"], error=DiffError, context="--against x")
    assert worktree_count(repo) == 1
    with pytest.raises(DiffError, match=r"^--against nope: fatal: invalid reference: nope$"):
        render_ref(repo, "nope", ["dev"], error=DiffError, context="--against nope")
    # An environment the ref does not have renders nothing (the script is never run).
    assert render_ref(repo, broken, ["qa"], error=DiffError, context="--against x") == {}


# A tree whose `python -m infra preview` writes one plan per --env and --cloud, recording how it
# was run (its arguments, PYTHONPATH and working directory) in the plan's outputs.
_RECORDING_INFRA = """\
import json, os, sys
args = sys.argv[1:]
out = args[args.index("--out") + 1]
envs = [args[i + 1] for i, a in enumerate(args) if a == "--env"]
clouds = [args[i + 1] for i, a in enumerate(args) if a == "--cloud"]
os.makedirs(out, exist_ok=True)
for env in envs:
    for cloud in clouds:
        ran = {"args": args, "pythonpath": os.environ["PYTHONPATH"], "cwd": os.getcwd()}
        plan = {"environment": env, "cloud": cloud, "stack": env, "mode": "offline",
                "resources": [], "outputs": ran}
        with open(os.path.join(out, f"{env}-{cloud}.json"), "w") as handle:
            json.dump(plan, handle)
"""


def test_render_ref_runs_the_refs_own_code_for_the_environments_it_has(small_repo: Path) -> None:
    files = {
        "infra/__init__.py": "",
        "infra/__main__.py": _RECORDING_INFRA,
        "environments/dev/settings.toml": "",
        "environments/staging/settings.toml": "",
    }
    ref = commit(small_repo, files, "a tree that records its render")
    plans = render_ref(
        small_repo, ref, ["dev", "qa", "staging"], ["aws"], error=DiffError, context="ctx"
    )
    assert sorted(plans) == ["dev-aws", "staging-aws"]  # qa is not in the ref
    ran = plans["dev-aws"].outputs
    assert ran["args"][:3] == ["preview", "--offline", "--quiet"]
    assert ran["args"][5:] == ["--env", "dev", "--env", "staging", "--cloud", "aws"]
    assert ran["pythonpath"] == ran["cwd"]  # the worktree's own code, run in the worktree
    assert ran["cwd"] != str(small_repo)
    assert not Path(ran["cwd"]).exists()  # and the worktree is gone
    assert worktree_count(small_repo) == 1
