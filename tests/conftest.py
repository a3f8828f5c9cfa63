"""Shared fixtures: a scratch copy of environments/ for loader tests, a scratch git repository."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.settings import ENVIRONMENTS_DIR, REPO_ROOT


@pytest.fixture
def environments_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped environments/ directory."""
    target = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, target)
    return target


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.fixture
def scratch_repo(tmp_path: Path) -> Callable[[], Path]:
    """A real git repository holding this project's infra code, environments and manifests."""

    def make() -> Path:
        repo = tmp_path / "repo"
        for part in ("infra", "environments"):
            shutil.copytree(
                REPO_ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__")
            )
        for manifest in REPO_ROOT.glob("services/*/manifest.toml"):
            target = repo / manifest.relative_to(REPO_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(manifest, target)
        git(repo.parent, "init", "--quiet", "--initial-branch=main", str(repo))
        git(repo, "config", "user.email", "ci@example.com")
        git(repo, "config", "user.name", "CI")
        git(repo, "add", "-A")
        git(repo, "commit", "--quiet", "-m", "initial")
        return repo

    return make
