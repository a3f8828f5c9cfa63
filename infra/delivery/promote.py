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
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.delivery.freeze import FreezeError, check_freeze, utc_now
from infra.errors import InfraError
from infra.git import commit_of, git, last_line, run, show, worktree
from infra.markdown import table
from infra.plans.judge.report import Verdict, markdown
from infra.plans.produce.checkout import render_checkout, render_ref
from infra.plans.read.diff import StackDiff, diff_plan_sets
from infra.plans.read.model import Plan, PlanError
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
    sha = commit_of(repo, commit)
    if sha is None:
        raise PromotionError(f"--source-commit {commit}: no such commit in {repo} (fetch first)")
    if run(repo, "merge-base", "--is-ancestor", sha, source_ref).returncode != 0:
        raise PromotionError(f"--source-commit {commit}: not a commit of {source_ref}")
    return sha


def branch_name(source: str, target: str) -> str:
    return f"promote/{source}-to-{target}"


def default_body_path(repo: Path, source: str, target: str) -> Path:
    return repo / "build" / "promote" / f"{source}-to-{target}.md"


# -- git -------------------------------------------------------------------------------------------


def _resolve(repo: Path, remote: str, branch: str) -> str:
    """The remote-tracking branch if there is one (what CI and reviewers see), else the local."""
    for ref in (f"refs/remotes/{remote}/{branch}", f"refs/heads/{branch}"):
        if commit_of(repo, ref) is not None:
            return ref.removeprefix("refs/remotes/").removeprefix("refs/heads/")
    raise PromotionError(f"no branch '{branch}' (nor {remote}/{branch}) in {repo}")


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


def _preview(
    repo: Path, target_ref: str, promoted: Path, env: str
) -> tuple[list[Plan], list[StackDiff], list[Verdict]]:
    """The target's plans after promotion, their diff against the target branch, the verdicts."""
    if not (promoted / "infra" / "__init__.py").exists():
        return [], [], []
    context = f"offline preview of {env}"
    with tempfile.TemporaryDirectory(prefix="billing-promote-plans-") as out:
        after = render_checkout(promoted, Path(out), [env], error=PromotionError, context=context)
    before = render_ref(repo, target_ref, [env], error=PromotionError, context=context)
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
    status = git(repo, "status", "--porcelain", "--untracked-files=normal").splitlines()
    if status:
        raise PromotionError(
            f"the checkout {repo} has uncommitted changes ({len(status)} paths, first: "
            f"{status[0][3:]}); commit or stash them first"
        )
    current = run(repo, "symbolic-ref", "--quiet", "--short", "HEAD").stdout.strip()
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
    merged = run(tree, "merge", "--no-ff", "--no-commit", source_ref)
    if merged.returncode == 0:
        return
    conflicts = run(tree, "diff", "--name-only", "--diff-filter=U").stdout.split()
    run(tree, "merge", "--abort")
    if conflicts:
        raise PromotionError(
            f"merging {source_ref} into {target_ref} conflicts in {', '.join(conflicts)}; "
            f"merge {source_ref} into {target_branch} by hand first"
        )
    detail = last_line(merged.stderr, merged.stdout)
    raise PromotionError(f"merging {source_ref} into {target_ref} failed: {detail}")


def _copy_pins(tree: Path, target: str, target_ref: str, pins: bytes) -> None:
    """Keep the target's directory as its branch has it, except for the source's pins."""
    # A merge must not carry the source branch's copy of the target's sizing or settings.
    target_dir = f"environments/{target}"
    git(tree, "rm", "-r", "-q", "-f", "--ignore-unmatch", "--", target_dir)
    git(tree, "checkout", target_ref, "--", target_dir)
    (tree / target_dir / PINS_FILE).write_bytes(pins)
    git(tree, "add", "--", f"{target_dir}/{PINS_FILE}")
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
    if run(repo, "rev-parse", "--show-toplevel").returncode != 0:
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
    released = git(repo, "rev-parse", f"{source_ref}^{{commit}}")
    code_commits = int(git(repo, "rev-list", "--count", f"{target_ref}..{source_ref}"))
    source_pins_path = f"environments/{source}/{PINS_FILE}"
    target_pins_path = f"environments/{target}/{PINS_FILE}"
    source_pins_raw = show(repo, source_ref, source_pins_path)
    source_pins = _parse_pins(source_pins_raw, f"{source_ref}:{source_pins_path}")
    target_pins_raw = show(repo, target_ref, target_pins_path)
    target_pins = _parse_pins(target_pins_raw, f"{target_ref}:{target_pins_path}")
    changes = pin_changes(target_pins, source_pins)
    # Nothing to promote only when the pins are equal AND the target already has the release's
    # code: a change to infra code alone must reach the next environment too.
    if not changes and not code_commits:
        raise PromotionError(
            f"{target} already runs {source}'s release ({target_ref} contains {released[:12]} "
            "and pins the same versions); nothing to promote"
        )

    with worktree(repo, target_ref, prefix="billing-promote-") as tree:
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
        git(tree, "commit", "--quiet", "--no-verify", "-m", message)
        commit = git(tree, "rev-parse", "HEAD")

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
    git(repo, "branch", "--force", branch, commit)
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
    count = int(git(repo, "rev-list", "--count", "--no-merges", f"{target_ref}..{source_ref}"))
    if not count:
        raise PromotionError(
            f"{target} already has every change of {source}; nothing to bring back"
        )
    target_dir = f"environments/{target}"
    with worktree(repo, target_ref, prefix="billing-promote-") as tree:
        _merge(tree, source_ref, target_ref, target_branch)
        git(tree, "rm", "-r", "-q", "-f", "--ignore-unmatch", "--", target_dir)
        git(tree, "checkout", target_ref, "--", target_dir)
        message = (
            f"Back-merge {source} into {target}\n\n{count} commits made on {source} "
            f"(a hotfix) come back to {target}; {target_dir}/ is unchanged.\n"
        )
        git(tree, "commit", "--quiet", "--no-verify", "-m", message)
        commit = git(tree, "rev-parse", "HEAD")
    git(repo, "branch", "--force", branch, commit)
    body = default_body_path(repo, source, target)
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_text(
        f"# Back-merge {source} into {target}\n\n{message.split(chr(10), 2)[2]}", encoding="utf-8"
    )
    released = git(repo, "rev-parse", f"{source_ref}^{{commit}}")
    return Promotion(source, target, branch, commit, [], body, None, released, count)
