"""Shared fixtures: a scratch copy of environments/ for loader tests, scratch git repositories."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.git import git
from infra.settings import ENVIRONMENTS_DIR, REPO_ROOT


@pytest.fixture
def environments_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped environments/ directory."""
    target = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, target)
    return target


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    """Write ``files`` (path -> text) into ``repo``, commit them all, return the commit."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text, encoding="utf-8")
    git(repo, "add", "--all")
    git(repo, "commit", "-qm", message, config=["user.name=Test", "user.email=test@example.com"])
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    """A real git repository on branch main with one commit: README.md saying "first"."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    commit(path, {"README.md": "first\n"}, "first")
    return path


def worktree_count(repo: Path) -> int:
    """How many worktrees ``repo`` has, its own checkout included."""
    listed = git(repo, "worktree", "list", "--porcelain").splitlines()
    return sum(1 for line in listed if line.startswith("worktree "))


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
