"""Real git repositories for the promotion flow: a bare remote, clones, environment branches."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.git import git
from infra.settings import ENVIRONMENTS_DIR, REPO_ROOT, promotion_order
from tests.infra.delivery.fake_github import WORKFLOW_TOKEN, FakeGitHub, serve


@dataclass(frozen=True)
class Snapshot:
    """What a refusal must leave as it was."""

    head: str
    symbolic: str
    status: str
    refs: str
    worktrees: str


def snapshot(repo: Path) -> Snapshot:
    return Snapshot(
        head=git(repo, "rev-parse", "HEAD"),
        symbolic=git(repo, "symbolic-ref", "--short", "HEAD"),
        status=git(repo, "status", "--porcelain", "--untracked-files=all"),
        refs=git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        worktrees=git(repo, "worktree", "list", "--porcelain"),
    )


@dataclass(frozen=True)
class Remote:
    """A bare remote with dev, staging and production branches, and a way to clone it."""

    bare: Path
    root: Path

    def clone(self, name: str, branch: str = "dev") -> Path:
        path = self.root / name
        git(self.root, "clone", "--quiet", "--branch", branch, str(self.bare), str(path))
        git(path, "config", "user.email", "ci@example.com")
        git(path, "config", "user.name", "CI")
        return path

    def commit_to(self, branch: str, files: dict[str, str], message: str) -> str:
        """Commit ``files`` (path -> text) on ``branch`` of the remote, as a person would."""
        work = self.root / f"work-{branch}-{abs(hash(message)) % 10**8}"
        if work.exists():
            shutil.rmtree(work)
        clone = self.clone(work.name, branch)
        for path, text in files.items():
            target = clone / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        git(clone, "add", "-A")
        git(clone, "commit", "--quiet", "-m", message)
        git(clone, "push", "--quiet", "origin", branch)
        sha = git(clone, "rev-parse", "HEAD")
        shutil.rmtree(clone)
        return sha

    def read(self, ref: str, path: str) -> str:
        return git(self.bare, "show", f"{ref}:{path}")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """environments/ and a minimal tree on dev, staging and production of a bare remote."""
    return make_remote(tmp_path, with_code=False)


@pytest.fixture
def remote_with_code(tmp_path: Path) -> Remote:
    """As ``remote``, with this project's infra/ code and service manifests, so stacks render."""
    return make_remote(tmp_path, with_code=True)


def make_remote(tmp_path: Path, *, with_code: bool) -> Remote:
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=dev", str(bare))
    seed = tmp_path / "seed"
    seed.mkdir()
    shutil.copytree(ENVIRONMENTS_DIR, seed / "environments")
    (seed / "README.md").write_text("# billing platform\n\nShared text.\n", encoding="utf-8")
    (seed / ".gitignore").write_text("build/\n__pycache__/\n", encoding="utf-8")
    if with_code:
        shutil.copytree(
            REPO_ROOT / "infra", seed / "infra", ignore=shutil.ignore_patterns("__pycache__")
        )
        for manifest in REPO_ROOT.glob("services/*/manifest.toml"):
            target = seed / manifest.relative_to(REPO_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(manifest, target)
    git(seed, "init", "--quiet", "--initial-branch=dev")
    git(seed, "config", "user.email", "ci@example.com")
    git(seed, "config", "user.name", "CI")
    git(seed, "add", "-A")
    git(seed, "commit", "--quiet", "-m", "initial")
    git(seed, "remote", "add", "origin", str(bare))
    for branch in promotion_order():
        git(seed, "push", "--quiet", "origin", f"HEAD:refs/heads/{branch}")
    shutil.rmtree(seed)
    return Remote(bare, tmp_path)


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    """GitHub's REST API faked on 127.0.0.1, with the runner's variables pointing at it."""
    fake = FakeGitHub()
    server, thread = serve(fake)
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    monkeypatch.setenv("GITHUB_REPOSITORY", fake.full_name)
    monkeypatch.setenv("GITHUB_TOKEN", WORKFLOW_TOKEN)
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
