"""`python -m infra` commands that talk to GitHub: the PR comment, drift and failure issues,
rollback, the freeze check, the deploy decision. Each is a Nox session the workflows run."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from github import GithubException

from infra.delivery.comment import (
    CommentError,
    comment_body,
    expected_stacks,
    marker,
    read_reports,
    with_missing,
)
from infra.delivery.github import (
    GitHubError,
    connection,
    message,
    repository,
    upsert_comment,
)
from infra.delivery.release import (
    app_repository,
    deployed_commits,
    open_or_update_pr,
    push_branch,
    rollback,
    write_body,
)
from infra.delivery.tracker import Subject, sync_issue
from infra.git import commit_of, worktree
from infra.plans.judge.outcome import RESULTS_FILE, StackOutcome, read_results
from infra.settings import EnvironmentSettings, known_environments, load_environment

if TYPE_CHECKING:
    from github.Repository import Repository

    from infra.delivery.reviewed import Decision


def run_url(environ: dict[str, str] | None = None) -> str:
    """This workflow run's page, from the variables GitHub Actions sets; empty outside Actions."""
    env = dict(os.environ) if environ is None else environ
    server, repo, run = (
        env.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else ""


def _found(paths: list[str], name: str) -> list[Path]:
    """Each path as given, or for a directory its ``name`` file or its subdirectories' ones.

    A directory of downloaded artifacts holds one subdirectory per job; a job that failed before
    uploading has none, and its stacks are reported missing rather than failing the comment.
    """
    found: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            direct = given / name
            found += [direct] if direct.is_file() else sorted(given.glob(f"*/{name}"))
        elif given.is_file():
            found.append(given)
    return found


def _plan_records(repo: Repository, outcomes: list[StackOutcome], head: str) -> str:
    """Hidden lines naming each saved plan, for deploy to find (see infra.delivery.reviewed)."""
    from infra.delivery.release import deployed_commits  # noqa: PLC0415
    from infra.delivery.reviewed import PlanRecord  # noqa: PLC0415

    run_id = os.environ.get("GITHUB_RUN_ID", "")
    deployed: dict[str, str] = {}
    lines = []
    for outcome in outcomes:
        if outcome.status != "ok":
            continue
        env = outcome.stack.rsplit("-", 1)[0]
        if env not in deployed:
            deployed[env] = next(iter(deployed_commits(repo, env)), "")
        lines.append(PlanRecord(outcome.stack, head, deployed[env], run_id).line())
    return "\n".join(lines)


def cmd_comment(args: argparse.Namespace) -> int:
    results = _found(args.results, RESULTS_FILE)
    outcomes = with_missing(read_results(results), expected_stacks(args.expect))
    if not outcomes and args.results and not results:
        error = "no result: the preview job ended before reporting"
        outcomes = [StackOutcome("(every stack)", status="failed", error=error)]
    body = comment_body(
        outcomes,
        read_reports(_found(args.report, "report.md")),
        kind=args.kind,
        title=args.title,
        commit=args.commit or os.environ.get("GITHUB_SHA", ""),
        run_url=run_url(),
        artifact=args.artifact,
    )
    if args.print_only:
        print(body)
        return 0
    repo = repository(connection())
    if args.record_plans:
        body += "\n" + _plan_records(
            repo, outcomes, args.commit or os.environ.get("GITHUB_SHA", "")
        )
    comment_id, created = upsert_comment(repo, args.pr, marker(args.kind), body)
    print(
        f"{'Created' if created else 'Updated'} comment {comment_id} on #{args.pr} "
        f"({len(body):,} characters, {len(outcomes)} stacks)."
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    checkout = Path(args.repo).resolve()
    github = app_repository() if args.open_pr or not args.deployed else None
    deployed = list(args.deployed or [])
    if not deployed and github is not None:
        deployed = deployed_commits(github, args.env)
    result = rollback(
        args.env,
        checkout=checkout,
        deployed=deployed,
        remote=args.remote,
        preview=not args.no_preview,
    )
    body = write_body(result.body, Path(args.body) if args.body else None)
    print(
        f"Built {result.branch} at {result.commit[:12]}: pins of {result.restored_from[:12]}, "
        f"{len(result.changes)} pins change. PR body: {body}"
    )
    if github is not None and args.open_pr:
        push_branch(checkout, args.remote, result.branch)
        base = load_environment(args.env, checkout / "environments").branch
        title = f"Roll back {args.env} to the pins of {result.restored_from[:12]}"
        pull = open_or_update_pr(github, result.branch, base, title, result.body)
        print(f"{'Opened' if pull.created else 'Updated'} pull request #{pull.number}.")
    return 0


def cmd_drift_issues(args: argparse.Namespace) -> int:
    from infra.delivery import drift_issues  # noqa: PLC0415

    envs = drift_issues.expected_stacks(args.env)
    stacks = [f"{e.name}-{c.value}" for e in envs for c in e.clouds]
    repo = repository(connection())
    notes = drift_issues.pending_notes(repo, Path(args.repo).resolve(), args.remote, envs)
    checks = [
        replace(c, pending=notes.get(c.stack, "")) if c.state != "clean" else c
        for c in drift_issues.read_checks(Path(args.reports), stacks)
    ]
    for line in drift_issues.summary(drift_issues.sync_all(repo, checks, run_url()), checks):
        print(line)
    return 0


FAILURE_KINDS = {"deploy": "Deploy", "promotion": "Promotion", "rollback": "Rollback"}
# The end of a log is where the error is; GitHub's body limit bounds the rest.
_LOG_TAIL_LINES = 80
_LOG_TAIL_CHARS = 20_000


def failure_subject(kind: str, key: str) -> Subject:
    title = FAILURE_KINDS[kind]
    return Subject(f"{kind}-failure", key, f"{kind}-failure", f"{title} failed: {key}")


def _log_tail(path: Path | None) -> str:
    if path is None or not path.is_file():
        return "(no log was captured)"
    lines = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    tail = "\n".join(lines[-_LOG_TAIL_LINES:])[-_LOG_TAIL_CHARS:]
    # A fence inside the log would end the issue's code block early.
    return tail.replace("```", "` ` `")


def cmd_delivery_issue(args: argparse.Namespace) -> int:
    """Open or update the issue of a failed deploy or promotion; close it when it succeeds."""
    subject = failure_subject(args.kind, args.key)
    run = run_url()
    commit = args.commit or os.environ.get("GITHUB_SHA", "")
    failed = args.outcome != "success"
    where = f" in [this run]({run})" if run else ""
    text = "\n".join(
        [
            f"The {args.kind} of `{args.key}` failed at commit `{commit[:12]}`{where}.",
            "",
            f"Outcome: {args.outcome}. The end of its log:",
            "",
            "```",
            _log_tail(args.log),
            "```",
        ]
    )
    note = (
        f"Failed again at `{commit[:12]}`{where}."
        if failed
        else f"Succeeded at `{commit[:12]}`{where}: closing."
    )
    synced = sync_issue(repository(connection()), subject, problem=failed, body=text, note=note)
    issue = f"#{synced.number} {synced.action.value}" if synced.number else "none"
    print(f"{args.kind} {args.key}: {args.outcome}; issue {issue}")
    return 0


def _now(value: str | None) -> dt.datetime:
    if not value:
        return dt.datetime.now(dt.UTC)
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise CommentError(f"--now {value}: give a UTC offset")
    return moment


def cmd_freeze_check(args: argparse.Namespace) -> int:
    """The required PR check: pass unless the base environment is frozen without break-glass."""
    from infra.delivery.freeze import active_freeze  # noqa: PLC0415
    from infra.delivery.freeze_gate import approved_break_glass  # noqa: PLC0415

    # The checkout is the base branch: its settings say when it is frozen, not the PR's.
    env = load_environment(args.env, Path(args.repo).resolve() / "environments")
    freeze = active_freeze(env, _now(args.now))
    if freeze is None:
        print(f"{env.name} is not frozen: the change may merge.")
        return 0
    glass = approved_break_glass(repository(connection()), args.pr) if args.pr else None
    if glass is not None:
        print(f"{freeze.describe()}; break-glass: {glass.line()}.")
        return 0
    print(
        f"error: {freeze.describe()}. Merging waits for the window to end, or for an approving "
        "review of the current head by someone with write access that says "
        "'Break-glass: <reason>'.",
        file=sys.stderr,
    )
    return 1


def _deploy_decisions(
    repo: Repository, checkout: Path, env: EnvironmentSettings, after: str
) -> tuple[list[Decision], int | None]:
    from infra.delivery.release import deployed_commits  # noqa: PLC0415
    from infra.delivery.reviewed import decide, merged_pull  # noqa: PLC0415

    deployed = next(iter(deployed_commits(repo, env.name)), None)
    merged = merged_pull(repo, after, env.branch)
    pr, records = merged if merged else (None, {})
    decisions = [
        decide(
            checkout,
            env.name,
            cloud.value,
            after=after,
            deployed=deployed,
            pr=pr,
            record=records.get(f"{env.name}-{cloud.value}"),
        )
        for cloud in env.clouds
    ]
    return decisions, pr


def cmd_deploy_plan(args: argparse.Namespace) -> int:
    """Per stack: skip, apply the reviewed plan, or plan again; and whether a freeze holds it."""
    from infra.delivery.freeze import active_freeze  # noqa: PLC0415
    from infra.delivery.freeze_gate import (  # noqa: PLC0415
        approved_break_glass,
        dispatched_break_glass,
    )

    checkout = Path(args.repo).resolve()
    env = load_environment(args.env, checkout / "environments")
    repo = repository(connection())
    decisions, pr = _deploy_decisions(repo, checkout, env, args.after)
    deploying = [d for d in decisions if d.action != "skip"]
    glass = None
    freeze = active_freeze(env, _now(args.now))
    if freeze is not None and deploying:
        glass = dispatched_break_glass(repo, args.actor or "", args.break_glass or "")
        if glass is None and pr is not None:
            glass = approved_break_glass(repo, pr)
        if glass is None:
            # Held, not failed: the catch-up schedule deploys when the window ends.
            print(f"{freeze.describe()}: deploy held until the window ends.")
            deploying = []
    for d in decisions:
        print(f"{d.stack}: {d.action}: {d.reason}")
    if glass is not None:
        print(f"Break-glass: {glass.line()}")
    matrix = json.dumps({"include": [d.matrix_entry() for d in deploying]}, separators=(",", ":"))
    print(matrix)
    if args.github_output:
        with Path(args.github_output).open("a", encoding="utf-8") as handle:
            handle.write(
                f"matrix={matrix}\nany={'true' if deploying else 'false'}\n"
                f"break-glass={glass.line() if glass else ''}\n"
            )
    return 0


def cmd_catch_up(args: argparse.Namespace) -> int:
    """Dispatch deploy for each environment whose branch is ahead of its deployment and unfrozen."""
    from infra.delivery.freeze import active_freeze  # noqa: PLC0415
    from infra.delivery.release import deployed_commits  # noqa: PLC0415
    from infra.delivery.reviewed import changed_stacks  # noqa: PLC0415

    checkout = Path(args.repo).resolve()
    repo = repository(connection())
    now = _now(args.now)
    for name in args.env or known_environments(checkout / "environments"):
        env = load_environment(name, checkout / "environments")
        head = _git_head(checkout, f"{args.remote}/{env.branch}")
        deployed = next(iter(deployed_commits(repo, env.name)), None)
        mine = {f"{name}-{c.value}" for c in env.clouds}
        pending = head != deployed and (
            deployed is None or bool(changed_stacks(checkout, deployed, head) & mine)
        )
        # The environment's own branch says when it is frozen.
        with worktree(checkout, head) as tree:
            freeze = active_freeze(load_environment(name, tree / "environments"), now)
        if not pending:
            print(f"{name}: up to date ({head[:12]})")
        elif freeze is not None:
            print(f"{name}: {head[:12]} waits: {freeze.describe()}")
        else:
            try:
                repo.get_workflow(args.workflow).create_dispatch(ref=env.branch)
            except GithubException as exc:
                where = f"dispatch {args.workflow} on {env.branch}"
                raise GitHubError(f"{where}: {message(exc)}") from None
            print(
                f"{name}: {head[:12]} not deployed (deployed: {(deployed or 'nothing')[:12]}); "
                f"dispatched {args.workflow} on {env.branch}"
            )
    return 0


def _git_head(checkout: Path, ref: str) -> str:
    commit = commit_of(checkout, ref)
    if commit is None:
        raise GitHubError(f"no {ref} in {checkout} (fetch it first)")
    return commit


def cmd_backport(args: argparse.Namespace) -> int:
    """Open the pull request that brings a downstream hotfix back upstream."""
    from infra.delivery.promote import back_merge  # noqa: PLC0415

    checkout = Path(args.repo).resolve()
    github = app_repository() if args.open_pr else None
    result = back_merge(args.source, args.target, repo=checkout, remote=args.remote)
    print(
        f"Built {result.branch} at {result.commit[:12]}: {result.code_commits} commits of "
        f"{args.source} come back to {args.target}."
    )
    if github is not None:
        push_branch(checkout, args.remote, result.branch)
        base = load_environment(args.target, checkout / "environments").branch
        title = f"Back-merge {args.source} into {args.target}"
        body = result.body_path.read_text(encoding="utf-8")
        pull = open_or_update_pr(github, result.branch, base, title, body)
        print(f"{'Opened' if pull.created else 'Updated'} pull request #{pull.number}.")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the GitHub-facing delivery commands on the `python -m infra` parser."""
    comment = commands.add_parser("comment", help="create or update the preview comment on a PR")
    add = comment.add_argument
    add("--pr", type=int, required=True, help="pull request number")
    add(
        "--results",
        action="append",
        default=[],
        metavar="PATH",
        help="results.jsonl (or its directory) from `preview`; repeatable",
    )
    add("--report", action="append", default=[], metavar="FILE", help="report.md; repeatable")
    add("--expect", metavar="JSON", help="the affected matrix: a stack without a result is failed")
    add("--kind", default="offline", help="which comment (its marker): offline or live")
    add("--title", default="Preview", help="the comment's heading")
    add("--commit", help="the commit previewed (default: $GITHUB_SHA)")
    add("--artifact", default="preview-report", help="the artifact holding the whole report")
    add("--print", dest="print_only", action="store_true", help="print the body, post nothing")
    add(
        "--record-plans",
        action="store_true",
        help="record the saved plan of each previewed stack for deploy",
    )
    comment.set_defaults(func=cmd_comment)

    _add_release_commands(commands)
    _add_issue_commands(commands)
    _add_deploy_commands(commands)


def _add_release_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    back = commands.add_parser("rollback", help="open a PR restoring the previous release's pins")
    add = back.add_argument
    add("--env", required=True, help="the environment to roll back")
    add("--repo", default=".", help="the git checkout (default: .)")
    add("--remote", default="origin", help="remote whose branches are used when present")
    add(
        "--deployed",
        action="append",
        metavar="SHA",
        help="deployed commits, newest first (default: the environment's deployments)",
    )
    add("--body", metavar="FILE", help="where the PR body goes")
    add("--no-preview", action="store_true", help="skip the offline preview diff")
    add(
        "--open-pr",
        action="store_true",
        help="push rollback/<env>, open or update the PR with the App token (PROMOTION_TOKEN)",
    )
    back.set_defaults(func=cmd_rollback)

    port = commands.add_parser("backport", help="bring a downstream hotfix back upstream, as a PR")
    add = port.add_argument
    add("--from", dest="source", required=True, metavar="ENV", help="where the hotfix landed")
    add("--to", dest="target", required=True, metavar="ENV", help="its upstream environment")
    add("--repo", default=".", help="the git checkout (default: .)")
    add("--remote", default="origin", help="remote whose branches are used when present")
    add("--open-pr", action="store_true", help="push and open the PR with the App token")
    port.set_defaults(func=cmd_backport)


def _add_issue_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from infra.delivery.drift_issues import add_arguments  # noqa: PLC0415

    issues = commands.add_parser("drift-issues", help="open, update or close one issue per stack")
    add_arguments(issues)
    issues.set_defaults(func=cmd_drift_issues)

    failure = commands.add_parser(
        "delivery-issue", help="open or update the issue of a failed deploy or promotion"
    )
    add = failure.add_argument
    add("--kind", required=True, choices=sorted(FAILURE_KINDS), help="what ran")
    add("--key", required=True, help="what it ran for: a stack (dev-aws) or a promotion")
    add(
        "--outcome",
        required=True,
        choices=["success", "failure", "cancelled"],
        help="the job's outcome (success closes the issue)",
    )
    add("--log", type=Path, help="the job's log: its end goes into the issue")
    add("--commit", help="the commit (default: $GITHUB_SHA)")
    failure.set_defaults(func=cmd_delivery_issue)


def _add_deploy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("freeze-check", help="the required PR check for change freezes")
    check.add_argument("--env", required=True, help="the environment the PR merges into")
    check.add_argument("--pr", type=int, help="the pull request (its reviews may break the glass)")
    check.add_argument("--now", help="judge the freeze at this time (ISO 8601 with offset)")
    check.add_argument("--repo", default=".", help="a checkout of the base branch (default: .)")
    check.set_defaults(func=cmd_freeze_check)

    plan = commands.add_parser("deploy-plan", help="per stack: skip, apply the reviewed plan, plan")
    add = plan.add_argument
    add("--env", required=True, help="the environment whose branch was pushed")
    add("--after", required=True, metavar="SHA", help="the pushed commit")
    add("--repo", default=".", help="the git checkout (default: .)")
    add("--actor", help="who dispatched the run (a break-glass input needs write access)")
    add("--break-glass", metavar="REASON", help="the workflow_dispatch break-glass input")
    add("--now", help="judge the freeze at this time (ISO 8601 with offset)")
    add("--github-output", metavar="FILE", help="append matrix=, any=, break-glass= to FILE")
    plan.set_defaults(func=cmd_deploy_plan)

    catch = commands.add_parser("catch-up", help="dispatch deploys a freeze held, once it ends")
    add = catch.add_argument
    add("--env", action="append", metavar="ENV", help="environments (default: all)")
    add("--repo", default=".", help="the git checkout with the remote's branches fetched")
    add("--remote", default="origin", help="remote of the environment branches")
    add("--workflow", default="deploy.yml", help="the deploy workflow's file name")
    add("--now", help="judge freezes at this time (ISO 8601 with offset)")
    catch.set_defaults(func=cmd_catch_up)
