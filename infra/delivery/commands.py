"""`python -m infra` commands that talk to GitHub: the PR comment, drift and failure issues,
rollback, the freeze check, the deploy decision. Each is a Nox session the workflows run."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from infra.delivery.comment import (
    CommentError,
    comment_body,
    expected_stacks,
    marker,
    read_reports,
    with_missing,
)
from infra.delivery.github import GitHubError, connection, repository, upsert_comment
from infra.delivery.release import (
    ReleaseError,
    app_repository,
    deployed_commits,
    open_or_update_pr,
    push_branch,
    rollback,
    write_body,
)
from infra.delivery.tracker import Subject, sync_issue
from infra.plans.outcome import RESULTS_FILE, StackOutcome, read_results
from infra.settings import load_environment

ERRORS: tuple[type[Exception], ...] = (GitHubError, CommentError, ReleaseError)


def run_url(environ: dict[str, str] | None = None) -> str:
    """This workflow run's page, from the variables GitHub Actions sets; empty outside Actions."""
    env = dict(os.environ) if environ is None else environ
    server, repo, run = (env.get(k, "") for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY",
                                                  "GITHUB_RUN_ID"))  # fmt: skip
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
    comment_id, created = upsert_comment(repo, args.pr, marker(args.kind), body)
    print(f"{'Created' if created else 'Updated'} comment {comment_id} on #{args.pr} "
          f"({len(body):,} characters, {len(outcomes)} stacks).")  # fmt: skip
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    checkout = Path(args.repo).resolve()
    github = app_repository() if args.open_pr or not args.deployed else None
    deployed = list(args.deployed or [])
    if not deployed and github is not None:
        deployed = deployed_commits(github, args.env)
    result = rollback(args.env, checkout=checkout, deployed=deployed, remote=args.remote,
                      preview=not args.no_preview)  # fmt: skip
    body = write_body(result.body, Path(args.body) if args.body else None)
    print(f"Built {result.branch} at {result.commit[:12]}: pins of {result.restored_from[:12]}, "
          f"{len(result.changes)} pins change. PR body: {body}")  # fmt: skip
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
    text = "\n".join([
        f"The {args.kind} of `{args.key}` failed at commit `{commit[:12]}`{where}.", "",
        f"Outcome: {args.outcome}. The end of its log:", "", "```", _log_tail(args.log), "```",
    ])  # fmt: skip
    note = (f"Failed again at `{commit[:12]}`{where}." if failed
            else f"Succeeded at `{commit[:12]}`{where}: closing.")  # fmt: skip
    synced = sync_issue(repository(connection()), subject, problem=failed, body=text, note=note)
    issue = f"#{synced.number} {synced.action.value}" if synced.number else "none"
    print(f"{args.kind} {args.key}: {args.outcome}; issue {issue}")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the GitHub-facing delivery commands on the `python -m infra` parser."""
    comment = commands.add_parser("comment", help="create or update the preview comment on a PR")
    add = comment.add_argument
    add("--pr", type=int, required=True, help="pull request number")
    add("--results", action="append", default=[], metavar="PATH",
        help="results.jsonl (or its directory) from `preview`; repeatable")  # fmt: skip
    add("--report", action="append", default=[], metavar="FILE", help="report.md; repeatable")
    add("--expect", metavar="JSON", help="the affected matrix: a stack without a result is failed")
    add("--kind", default="offline", help="which comment (its marker): offline or live")
    add("--title", default="Preview", help="the comment's heading")
    add("--commit", help="the commit previewed (default: $GITHUB_SHA)")
    add("--artifact", default="preview-report", help="the artifact holding the whole report")
    add("--print", dest="print_only", action="store_true", help="print the body, post nothing")
    comment.set_defaults(func=cmd_comment)

    back = commands.add_parser("rollback", help="open a PR restoring the previous release's pins")
    add = back.add_argument
    add("--env", required=True, help="the environment to roll back")
    add("--repo", default=".", help="the git checkout (default: .)")
    add("--remote", default="origin", help="remote whose branches are used when present")
    add("--deployed", action="append", metavar="SHA",
        help="deployed commits, newest first (default: the environment's deployments)")  # fmt: skip
    add("--body", metavar="FILE", help="where the PR body goes")
    add("--no-preview", action="store_true", help="skip the offline preview diff")
    add(
        "--open-pr",
        action="store_true",
        help="push rollback/<env>, open or update the PR with the App token (PROMOTION_TOKEN)",
    )
    back.set_defaults(func=cmd_rollback)

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
    add("--outcome", required=True, choices=["success", "failure", "cancelled"],
        help="the job's outcome (success closes the issue)")  # fmt: skip
    add("--log", type=Path, help="the job's log: its end goes into the issue")
    add("--commit", help="the commit (default: $GITHUB_SHA)")
    failure.set_defaults(func=cmd_delivery_issue)
