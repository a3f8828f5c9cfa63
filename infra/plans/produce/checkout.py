"""Plans of another checkout: a git ref or a worktree rendered offline by its own code.

A diff against a ref (``--against REF``) and a promotion's preview both need the plans another
tree would deploy. That tree's code may differ from the running one, so each render runs
``python -m infra preview --offline`` in a new process with the tree first on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from infra.errors import InfraError
from infra.git import GitError, last_line, worktree
from infra.plans.read.model import Plan, PlanError, load_plan

Error = TypeVar("Error", bound=InfraError)


def render_checkout(
    tree: Path,
    out: Path,
    environments: Iterable[str],
    clouds: Iterable[str] = (),
    *,
    error: type[Error],
    context: str,
) -> dict[str, Plan]:
    """Render ``environments`` of ``tree`` offline with the tree's own code; plans by stack key.

    A failed render or an unreadable plan raises ``error`` as ``<context>: <what went wrong>``.
    """
    command = [sys.executable, "-m", "infra", "preview", "--offline", "--quiet", "--out", str(out)]
    command += [arg for env in environments for arg in ("--env", env)]
    command += [arg for cloud in clouds for arg in ("--cloud", cloud)]
    # The tree's own code renders the tree's environments.
    variables = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        command, cwd=tree, env=variables, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise error(f"{context}: rendering failed: {last_line(result.stderr, result.stdout)}")
    try:
        return {path.stem: load_plan(path) for path in sorted(out.glob("*.json"))}
    except PlanError as exc:
        raise error(f"{context}: {exc}") from None


def render_ref(
    repo: Path,
    ref: str,
    environments: Iterable[str],
    clouds: Iterable[str] = (),
    *,
    error: type[Error],
    context: str,
) -> dict[str, Plan]:
    """Render ``ref`` of ``repo`` offline in a temporary worktree; plans by stack key.

    Environments that do not exist at ``ref`` are left out (they have no plan there).
    """
    envs, cloud_list = list(environments), list(clouds)
    with tempfile.TemporaryDirectory(prefix="billing-plans-") as out:
        try:
            with worktree(repo, ref) as tree:
                known = [e for e in envs if (tree / "environments" / e / "settings.toml").exists()]
                if not known:
                    return {}
                return render_checkout(
                    tree, Path(out), known, cloud_list, error=error, context=context
                )
        except GitError as exc:
            raise error(f"{context}: {exc.detail}") from None
