"""Promotion: move the source environment's version pins to the next environment, as a branch.

In a checkout, ``promote("dev", "staging")`` builds the branch ``promote/dev-to-staging`` from the
target's branch, merges the source's branch into it, copies ``environments/dev/pins.toml`` to
``environments/staging/pins.toml`` (pins only: the target's sizing and settings stay as the target's
branch has them), commits with a message listing each pin from -> to, and writes the PR body.

The work happens in a temporary git worktree, so the checkout's HEAD, index and files never move;
a refusal leaves the repository exactly as it was (same HEAD, clean status, same branches).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.delivery.freeze import FreezeError, check_freeze, utc_now
from infra.errors import InfraError
from infra.markdown import table
from infra.plans.diff import StackDiff, diff_plan_sets
from infra.plans.model import Plan, PlanError, load_plan
from infra.plans.report import Verdict, markdown
from infra.settings import (
    PINS_FILE,
    REPO_ROOT,
    EnvironmentSettings,
    SettingsError,
    load_environment,
    promotion_order,
)


class PromotionError(InfraError):
    """A promotion that cannot go ahead; the message is one line and nothing was changed."""


@dataclass(frozen=True)
class PinChange:
    """One pin that differs: dotted key, the target's value and the source's."""

    key: str
    before: str | None
    after: str | None

    def line(self) -> str:
        return f"{self.key}: {self.before or '(none)'} -> {self.after or '(none)'}"


@dataclass(frozen=True)
class Promotion:
    """A promotion branch that was built."""

    source: str
    target: str
    branch: str
    commit: str
    changes: list[PinChange]
    body_path: Path
    break_glass: str | None
    release: str = ""  # the promoted commit: what was deployed to the source
    code_commits: int = 0  # commits of the release the target does not have yet


# The trailer naming the promoted commit in a promotion's merge commit.
RELEASE_TRAILER = "Promoted-Commit"


def _release_commit(repo: Path, commit: str, source_ref: str) -> str:
    """The deployed commit, checked to be a commit of the source branch."""
    found = _git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", check=False)
    if found.returncode != 0:
        raise PromotionError(f"--source-commit {commit}: no such commit in {repo} (fetch first)")
    sha = found.stdout.strip()
    on_branch = _git(repo, "merge-base", "--is-ancestor", sha, source_ref, check=False)
    if on_branch.returncode != 0:
        raise PromotionError(f"--source-commit {commit}: not a commit of {source_ref}")
    return sha


def branch_name(source: str, target: str) -> str:
    return f"promote/{source}-to-{target}"


def default_body_path(repo: Path, source: str, target: str) -> Path:
    return repo / "build" / "promote" / f"{source}-to-{target}.md"


# -- git -------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise PromotionError(f"git {args[0]} failed: {detail[-1] if detail else 'no output'}")
    return result


def _resolve(repo: Path, remote: str, branch: str) -> str:
    """The remote-tracking branch if there is one (what CI and reviewers see), else the local."""
    for ref in (f"refs/remotes/{remote}/{branch}", f"refs/heads/{branch}"):
        found = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if found.returncode == 0:
            return ref.removeprefix("refs/remotes/").removeprefix("refs/heads/")
    raise PromotionError(f"no branch '{branch}' (nor {remote}/{branch}) in {repo}")


def _show(repo: Path, ref: str, path: str) -> bytes:
    result = subprocess.run(
        ["git", "-C", str(repo), "show", f"{ref}:{path}"], capture_output=True, check=False
    )
    if result.returncode != 0:
        raise PromotionError(f"{ref} has no {path}")
    return result.stdout


@contextmanager
def _worktree(repo: Path, ref: str) -> Iterator[Path]:
    """A detached worktree at ``ref`` in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="billing-promote-") as tmp:
        tree = Path(tmp) / "tree"
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), ref)
        try:
            yield tree
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree), check=False)
            _git(repo, "worktree", "prune", check=False)


# -- pins ------------------------------------------------------------------------------------------


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = str(value)
    return flat


def _parse_pins(raw: bytes, where: str) -> dict[str, str]:
    try:
        return _flatten(tomllib.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PromotionError(f"{where}: invalid TOML: {exc}") from None


def pin_changes(before: dict[str, str], after: dict[str, str]) -> list[PinChange]:
    """Every dotted pin key whose value differs, sorted by key."""
    keys = sorted(set(before) | set(after))
    return [
        PinChange(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)
    ]


def check_order(source: str, target: str) -> None:
    """Raise PromotionError unless ``source`` comes right before ``target`` in the order."""
    chain = promotion_order()
    order = " -> ".join(chain)
    for name in (source, target):
        if name not in chain:
            raise PromotionError(f"unknown environment '{name}' (promotion order: {order})")
    upstream = chain.index(target) - 1
    if upstream < 0:
        raise PromotionError(f"{target} is first in the promotion order ({order})")
    if chain[upstream] != source:
        raise PromotionError(
            f"{source} is not {target}'s upstream: {target} takes changes from "
            f"{chain[upstream]} (promotion order: {order})"
        )


# -- preview ---------------------------------------------------------------------------------------


def _render_tree(tree: Path, env: str, out: Path) -> dict[str, Plan]:
    """Render ``env`` offline with the tree's own code and environments; plans by stack key."""
    command = [
        sys.executable,
        "-m",
        "infra",
        "preview",
        "--offline",
        "--quiet",
        "--env",
        env,
        "--out",
        str(out),
    ]
    env_vars = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        command, cwd=tree, env=env_vars, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise PromotionError(f"offline preview of {env} failed: {detail[-1] if detail else ''}")
    try:
        return {p.stem: load_plan(p) for p in sorted(out.glob("*.json"))}
    except PlanError as exc:
        raise PromotionError(f"offline preview of {env}: {exc}") from None


def _preview(
    repo: Path, target_ref: str, promoted: Path, env: str
) -> tuple[list[Plan], list[StackDiff], list[Verdict]]:
    """The target's plans after promotion, their diff against the target branch, the verdicts."""
    if not (promoted / "infra" / "__init__.py").exists():
        return [], [], []
    with tempfile.TemporaryDirectory(prefix="billing-promote-plans-") as tmp:
        after = _render_tree(promoted, env, Path(tmp) / "after")
        with _worktree(repo, target_ref) as before_tree:
            before = _render_tree(before_tree, env, Path(tmp) / "before")
    plans = [after[k] for k in sorted(after)]
    diffs = diff_plan_sets(before, after)
    from infra.cost.prices import PricesError  # noqa: PLC0415 - loads the price file
    from infra.policy.checks import preview_verdicts  # noqa: PLC0415 - loads the policy packs

    try:
        verdicts, _failed = preview_verdicts(plans, diffs, before, target_ref)
    except (PricesError, PlanError, SettingsError) as exc:
        raise PromotionError(f"checks of {env}'s preview: {exc}") from None
    return plans, diffs, verdicts


# -- the body and the message ----------------------------------------------------------------------


def commit_message(
    source: str, target: str, changes: Sequence[PinChange], merged: str, onto: str, note: str | None
) -> str:
    copied = f"environments/{source}/{PINS_FILE} to environments/{target}/{PINS_FILE}"
    lines = [f"Promote {source} to {target}", "", f"Pins copied from {copied}:"]
    lines += [f"- {c.line()}" for c in changes]
    lines += ["", f"Merges {merged} into {onto}; {target}'s sizing and settings are unchanged."]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _code(value: str | None) -> str:
    return f"`{value}`" if value is not None else "(none)"


def pr_body(
    source: str,
    target: str,
    *,
    changes: Sequence[PinChange],
    unchanged: int,
    plans: Sequence[Plan],
    diffs: Sequence[StackDiff],
    target_ref: str,
    verdicts: Sequence[Verdict],
    note: str | None,
    release: tuple[str, int] | None = None,
) -> str:
    """The promotion PR's body: version table, offline preview diff, verdicts."""
    lines = [f"# Promote {source} to {target}", ""]
    if note:
        lines += [f"> **{note}**", ""]
    if release is not None:
        sha, count = release
        brings = f"it brings {count} commits {target} does not have yet"
        lines += [f"Release: `{sha}`, the commit deployed to {source}; {brings}.", ""]
    moved = f"`environments/{source}/{PINS_FILE}` -> `environments/{target}/{PINS_FILE}`"
    lines += [f"Version pins {moved}; {target}'s sizing and settings are unchanged.", ""]
    rows = [[f"`{c.key}`", _code(c.before), _code(c.after)] for c in changes]
    lines += table(["Pin", f"{target} now", f"after (from {source})"], rows)
    lines += ["", f"{unchanged} other pins are already equal.", ""]
    if plans:
        report = markdown(plans, diffs, target_ref, verdicts)
        # One level down: the report's headings sit under this body's title.
        lines += [("#" + line) if line.startswith("#") else line for line in report.splitlines()]
    else:
        lines += ["Offline preview: not rendered (this checkout has no infra/ package)."]
        for verdict in verdicts:
            lines += [
                "",
                f"## {verdict.title}: {'pass' if verdict.ok else 'FAIL'}",
                "",
                verdict.markdown.rstrip(),
            ]
    return "\n".join(lines).rstrip() + "\n"


# -- the flow --------------------------------------------------------------------------------------


def _check_clean(repo: Path, branch: str) -> None:
    status = _git(repo, "status", "--porcelain", "--untracked-files=normal").stdout.splitlines()
    if status:
        raise PromotionError(
            f"the checkout {repo} has uncommitted changes ({len(status)} paths, first: "
            f"{status[0][3:]}); commit or stash them first"
        )
    current = _git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip()
    if current == branch:
        raise PromotionError(f"the checkout is on {branch}, which promotion rebuilds; switch first")


def _load_target(tree: Path, target: str, ref: str) -> EnvironmentSettings:
    try:
        return load_environment(target, tree / "environments")
    except SettingsError as exc:
        # Name the file as it is in the repository, not in the temporary worktree.
        file = exc.file.removeprefix(f"{tree}{os.sep}")
        where = f"{file}: key '{exc.key}'" if exc.key else file
        raise PromotionError(f"{ref}: {where}: {exc.message}") from None


def _merge(tree: Path, source_ref: str, target_ref: str, target_branch: str) -> None:
    """Merge ``source_ref`` into the worktree without committing; refuse on a conflict."""
    merged = _git(tree, "merge", "--no-ff", "--no-commit", source_ref, check=False)
    if merged.returncode == 0:
        return
    unmerged = _git(tree, "diff", "--name-only", "--diff-filter=U", check=False)
    conflicts = unmerged.stdout.split()
    _git(tree, "merge", "--abort", check=False)
    if conflicts:
        raise PromotionError(
            f"merging {source_ref} into {target_ref} conflicts in {', '.join(conflicts)}; "
            f"merge {source_ref} into {target_branch} by hand first"
        )
    detail = (merged.stderr or merged.stdout).strip().splitlines()
    last = detail[-1] if detail else "no output"
    raise PromotionError(f"merging {source_ref} into {target_ref} failed: {last}")


def _copy_pins(tree: Path, target: str, target_ref: str, pins: bytes) -> None:
    """Keep the target's directory as its branch has it, except for the source's pins."""
    # A merge must not carry the source branch's copy of the target's sizing or settings.
    target_dir = f"environments/{target}"
    _git(tree, "rm", "-r", "-q", "-f", "--ignore-unmatch", "--", target_dir)
    _git(tree, "checkout", target_ref, "--", target_dir)
    (tree / target_dir / PINS_FILE).write_bytes(pins)
    _git(tree, "add", "--", f"{target_dir}/{PINS_FILE}")
    # The promoted pins must fit the target (an image for every service it runs).
    _load_target(tree, target, f"{target} after promotion")


def promote(
    source: str,
    target: str,
    *,
    repo: Path = REPO_ROOT,
    remote: str = "origin",
    now: dt.datetime | None = None,
    break_glass: str | None = None,
    body_path: Path | None = None,
    preview: bool = True,
    verdicts: Sequence[Verdict] = (),
    source_commit: str | None = None,
) -> Promotion:
    """Build the promotion branch and write the PR body, or refuse changing nothing.

    ``source_commit`` is the release: the commit deployed to ``source`` (the deployments API
    knows it; see ``infra.delivery.release``). Without it the source branch's tip is promoted.
    """
    check_order(source, target)
    repo = repo.resolve()
    top = _git(repo, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        raise PromotionError(f"{repo} is not a git checkout")
    branch = branch_name(source, target)
    _check_clean(repo, branch)

    # The checkout is clean, so its files are HEAD's: they name each environment's branch.
    source_branch = _load_target(repo, source, "HEAD").branch
    target_branch = _load_target(repo, target, "HEAD").branch
    source_ref = _resolve(repo, remote, source_branch)
    if source_commit is not None:
        source_ref = _release_commit(repo, source_commit, source_ref)
    target_ref = _resolve(repo, remote, target_branch)
    released = _git(repo, "rev-parse", f"{source_ref}^{{commit}}").stdout.strip()
    code_commits = int(_git(repo, "rev-list", "--count", f"{target_ref}..{source_ref}").stdout)
    source_pins_path = f"environments/{source}/{PINS_FILE}"
    target_pins_path = f"environments/{target}/{PINS_FILE}"
    source_pins_raw = _show(repo, source_ref, source_pins_path)
    source_pins = _parse_pins(source_pins_raw, f"{source_ref}:{source_pins_path}")
    target_pins_raw = _show(repo, target_ref, target_pins_path)
    target_pins = _parse_pins(target_pins_raw, f"{target_ref}:{target_pins_path}")
    changes = pin_changes(target_pins, source_pins)
    # Nothing to promote only when the pins are equal AND the target already has the release's
    # code: a change to infra code alone must reach the next environment too.
    if not changes and not code_commits:
        raise PromotionError(
            f"{target} already runs {source}'s release ({target_ref} contains {released[:12]} "
            "and pins the same versions); nothing to promote"
        )

    with _worktree(repo, target_ref) as tree:
        # The target's own branch says when it is frozen.
        target_env = _load_target(tree, target, target_ref)
        try:
            note = check_freeze(target_env, now or utc_now(), break_glass, f"promote into {target}")
        except FreezeError as exc:
            raise PromotionError(str(exc)) from None

        _merge(tree, source_ref, target_ref, target_branch)
        _copy_pins(tree, target, target_ref, source_pins_raw)

        message = commit_message(source, target, changes, source_ref, target_ref, note)
        message += f"\n{RELEASE_TRAILER}: {released}\n"
        _git(tree, "commit", "--quiet", "--no-verify", "-m", message)
        commit = _git(tree, "rev-parse", "HEAD").stdout.strip()

        plans, diffs, checks = _preview(repo, target_ref, tree, target) if preview else ([], [], [])

    unchanged = len(set(source_pins) & set(target_pins)) - sum(
        1 for c in changes if c.before is not None and c.after is not None
    )
    body = pr_body(
        source,
        target,
        changes=changes,
        unchanged=unchanged,
        plans=plans,
        diffs=diffs,
        target_ref=target_ref,
        verdicts=[*checks, *verdicts],
        note=note,
        release=(released, code_commits),
    )
    out = body_path or default_body_path(repo, source, target)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    _git(repo, "branch", "--force", branch, commit)
    return Promotion(source, target, branch, commit, changes, out, note, released, code_commits)


# -- back-merge: a hotfix flows back --------------------------------------------------------------


def backport_branch(source: str, target: str) -> str:
    return f"backport/{source}-to-{target}"


def back_merge(
    source: str, target: str, *, repo: Path = REPO_ROOT, remote: str = "origin"
) -> Promotion:
    """Build ``backport/<source>-to-<target>``: the downstream branch (a hotfix on production)
    merged back into its upstream, so the next promotion does not undo it.

    The target's environment directory stays exactly as its branch has it (its pins and sizing
    are its own); everything else merges. Refuses, changing nothing, when there is nothing to
    bring back or the merge conflicts.
    """
    check_order(target, source)  # source comes right after target: production -> staging
    repo = repo.resolve()
    branch = backport_branch(source, target)
    _check_clean(repo, branch)
    source_ref = _resolve(repo, remote, _load_target(repo, source, "HEAD").branch)
    target_branch = _load_target(repo, target, "HEAD").branch
    target_ref = _resolve(repo, remote, target_branch)
    count = int(
        _git(repo, "rev-list", "--count", "--no-merges", f"{target_ref}..{source_ref}").stdout
    )
    if not count:
        raise PromotionError(
            f"{target} already has every change of {source}; nothing to bring back"
        )
    target_dir = f"environments/{target}"
    with _worktree(repo, target_ref) as tree:
        _merge(tree, source_ref, target_ref, target_branch)
        _git(tree, "rm", "-r", "-q", "-f", "--ignore-unmatch", "--", target_dir)
        _git(tree, "checkout", target_ref, "--", target_dir)
        message = (
            f"Back-merge {source} into {target}\n\n{count} commits made on {source} "
            f"(a hotfix) come back to {target}; {target_dir}/ is unchanged.\n"
        )
        _git(tree, "commit", "--quiet", "--no-verify", "-m", message)
        commit = _git(tree, "rev-parse", "HEAD").stdout.strip()
    _git(repo, "branch", "--force", branch, commit)
    body = default_body_path(repo, source, target)
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_text(
        f"# Back-merge {source} into {target}\n\n{message.split(chr(10), 2)[2]}", encoding="utf-8"
    )
    released = _git(repo, "rev-parse", f"{source_ref}^{{commit}}").stdout.strip()
    return Promotion(source, target, branch, commit, [], body, None, released, count)
