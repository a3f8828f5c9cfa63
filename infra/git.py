"""Git, run the one way every command runs it: a failure is one :class:`GitError` naming the
command and carrying git's last line of stderr, and work on another ref happens in a temporary
worktree that is removed however the work ends.

Only the standard library and :mod:`infra.errors`: `python -m infra affected` stays free of the
Pulumi SDK.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from infra.errors import InfraError

# The words that name a git command (``worktree add``, ``merge-base``), not its arguments.
_COMMAND_WORD = re.compile(r"[a-z][a-z-]*")


class GitError(InfraError):
    """A git command that failed: ``git <command> failed: <git's last line of output>``."""

    def __init__(self, args: Sequence[str], detail: str) -> None:
        self.argv = tuple(args)
        self.command = "git " + " ".join(command_words(args))
        self.detail = detail
        super().__init__(f"{self.command} failed: {detail}")


def command_words(args: Sequence[str]) -> list[str]:
    """The command of a git argument list (up to two words), never its values or messages."""
    words: list[str] = []
    for arg in args[:2]:
        if not _COMMAND_WORD.fullmatch(arg):
            break
        words.append(arg)
    return words or list(args[:1])


def last_line(stderr: str, stdout: str = "") -> str:
    """Git's last line of output on stderr (else stdout): the line that says what went wrong."""
    lines = (stderr.strip() or stdout.strip()).splitlines()
    return lines[-1].strip() if lines else "no output"


def _run_bytes(
    repo: Path, args: Sequence[str], config: Sequence[str] = ()
) -> subprocess.CompletedProcess[bytes]:
    options = [part for entry in config for part in ("-c", entry)]
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *options, *args], capture_output=True, check=False
        )
    except OSError as exc:  # no git on PATH, or the directory is gone
        raise GitError(args, str(exc)) from None


def run(repo: Path, *args: str, config: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``git -C repo [-c config]... args`` and return its result, whatever its exit code.

    For commands whose exit code is the answer (``merge-base --is-ancestor``, a merge that may
    conflict). ``config`` entries (``name=value``) never appear in an error message.
    """
    done = _run_bytes(repo, args, config)
    out, err = (stream.decode("utf-8", "replace") for stream in (done.stdout, done.stderr))
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def git(repo: Path, *args: str, config: Sequence[str] = ()) -> str:
    """Run git in ``repo`` and return its output (trailing newlines removed), or raise GitError."""
    result = run(repo, *args, config=config)
    if result.returncode != 0:
        raise GitError(args, last_line(result.stderr, result.stdout))
    return result.stdout.rstrip("\n")


def commit_of(repo: Path, ref: str) -> str | None:
    """The commit ``ref`` names in ``repo``, or None when it names none."""
    result = run(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return result.stdout.strip() if result.returncode == 0 else None


def show(repo: Path, ref: str, path: str) -> bytes:
    """The bytes of ``path`` at ``ref`` (``git show ref:path``), or GitError."""
    args = ["show", f"{ref}:{path}"]
    done = _run_bytes(repo, args)
    if done.returncode != 0:
        raise GitError(args, last_line(done.stderr.decode("utf-8", "replace")))
    return done.stdout


def changed_files(repo: Path, *revisions: str) -> list[str]:
    """Paths that differ between ``revisions`` (as ``git diff`` takes them), renames as two."""
    output = git(repo, "diff", "--name-only", "--no-renames", *revisions, "--")
    return sorted(line for line in output.splitlines() if line)


@contextmanager
def worktree(repo: Path, ref: str, *, prefix: str = "billing-tree-") -> Iterator[Path]:
    """A detached worktree of ``repo`` at ``ref`` in a temporary directory.

    It is removed when the block ends, by an exception too, so the checkout's worktree list and
    branches are as they were; the caller's checkout (HEAD, index, files) never moves.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        tree = Path(tmp) / "tree"
        git(repo, "worktree", "add", "--detach", "--quiet", str(tree), ref)
        try:
            yield tree
        finally:
            # Best effort: a failure here must not hide the block's own exception. --force
            # twice removes a worktree with changes and one that was locked (git-worktree(1));
            # `prune` drops the record should `remove` still fail.
            run(repo, "worktree", "remove", "--force", "--force", str(tree))
            run(repo, "worktree", "prune")
