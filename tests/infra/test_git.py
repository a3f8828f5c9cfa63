"""The git helper on real repositories: errors that name the command and carry git's own last
line, worktrees that are removed however the work ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import InfraError
from infra.git import GitError, changed_files, commit_of, git, run, show, worktree
from tests.conftest import commit, worktree_count


@pytest.fixture
def repo(small_repo: Path) -> Path:
    return small_repo


def test_a_failure_names_the_command_and_ends_with_gits_last_line(repo: Path) -> None:
    with pytest.raises(GitError) as raised:
        # git says four lines here; the last one is the message.
        git(repo, "push", str(repo.parent / "nowhere"), "main")
    error = raised.value
    assert isinstance(error, InfraError)  # `python -m infra` reports it as one line
    assert str(error) == "git push failed: and the repository exists."
    assert error.command == "git push"
    assert error.argv == ("push", str(repo.parent / "nowhere"), "main")


def test_the_command_is_named_without_its_values(repo: Path) -> None:
    with pytest.raises(GitError, match=r"^git worktree add failed: fatal: invalid reference: no"):
        git(repo, "worktree", "add", "--detach", str(repo.parent / "t"), "no-such-ref")
    with pytest.raises(GitError, match=r"^git rev-parse failed: fatal: Needed a single revision$"):
        git(repo, "rev-parse", "--verify", "no-such-ref")


def test_config_values_never_reach_the_message(repo: Path) -> None:
    header = "http.extraheader=AUTHORIZATION: basic c2VjcmV0LXRva2Vu"
    with pytest.raises(GitError) as raised:
        git(repo, "push", str(repo.parent / "nowhere"), "main", config=[header])
    assert "c2VjcmV0LXRva2Vu" not in str(raised.value)
    # The option did reach git: it is in the configuration git sees for that command.
    seen = git(repo, "config", "--get", "http.extraheader", config=[header])
    assert seen == "AUTHORIZATION: basic c2VjcmV0LXRva2Vu"


def test_run_returns_the_exit_code_instead_of_raising(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    second = commit(repo, {"README.md": "second\n"}, "second")
    assert run(repo, "merge-base", "--is-ancestor", first, second).returncode == 0
    assert run(repo, "merge-base", "--is-ancestor", second, first).returncode == 1


def test_output_keeps_leading_spaces_and_drops_the_final_newline(repo: Path) -> None:
    (repo / "README.md").write_text("edited\n", encoding="utf-8")
    assert git(repo, "status", "--porcelain") == " M README.md"


def test_commit_of_show_and_changed_files(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "branch", "feature")
    git(repo, "checkout", "--quiet", "feature")
    second = commit(repo, {"a/b.toml": "x = 1\n", "README.md": "second\n"}, "second")
    assert commit_of(repo, "feature") == second
    assert commit_of(repo, "main") == first
    assert commit_of(repo, "no-such-ref") is None
    assert show(repo, first, "README.md") == b"first\n"
    assert show(repo, "feature", "a/b.toml") == b"x = 1\n"
    with pytest.raises(GitError, match=r"^git show failed: fatal: path 'c.toml' does not exist in"):
        show(repo, "main", "c.toml")
    assert changed_files(repo, "main...feature") == ["README.md", "a/b.toml"]
    assert changed_files(repo, "feature", "main") == ["README.md", "a/b.toml"]
    with pytest.raises(GitError, match=r"^git diff failed: fatal: bad revision 'nope\.\.\.main'$"):
        changed_files(repo, "nope...main")


def test_worktree_checks_out_the_ref_and_leaves_the_checkout_alone(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    commit(repo, {"README.md": "second\n"}, "second")
    with worktree(repo, first) as tree:
        assert (tree / "README.md").read_text(encoding="utf-8") == "first\n"
        assert git(tree, "rev-parse", "HEAD") == first
        assert worktree_count(repo) == 2
    assert not tree.exists()
    assert worktree_count(repo) == 1
    assert (repo / "README.md").read_text(encoding="utf-8") == "second\n"
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"


def test_worktree_is_removed_when_the_block_raises(repo: Path) -> None:
    used: list[Path] = []

    def work() -> None:
        with worktree(repo, "HEAD") as tree:
            used.append(tree)
            (tree / "scratch.txt").write_text("left behind?\n", encoding="utf-8")
            raise RuntimeError("the work failed")

    with pytest.raises(RuntimeError, match="the work failed"):
        work()
    assert used
    assert not used[0].exists()
    assert worktree_count(repo) == 1
    assert git(repo, "status", "--porcelain") == ""


def test_worktree_is_removed_even_when_the_block_locks_it(repo: Path) -> None:
    with worktree(repo, "HEAD") as tree:
        git(repo, "worktree", "lock", "--reason", "a tool still uses it", str(tree))
        (tree / "README.md").write_text("changed\n", encoding="utf-8")
    assert not tree.exists()
    assert worktree_count(repo) == 1


def test_worktree_of_a_missing_ref_raises_and_leaves_nothing(repo: Path) -> None:
    with (
        pytest.raises(GitError, match="invalid reference: no-such-ref"),
        worktree(repo, "no-such-ref"),
    ):
        pytest.fail("the block must not run")
    assert worktree_count(repo) == 1
    assert git(repo, "worktree", "prune", "--dry-run", "--verbose") == ""


def test_git_missing_from_path_is_a_git_error(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(repo))  # no git executable there
    with pytest.raises(GitError, match=r"^git status failed: "):
        git(repo, "status")
