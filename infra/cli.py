"""`python -m infra`: the commands behind the Nox sessions (preview, up, drift, ...).

Every command ends with an exit code (0 success, 1 error or mandatory failure, 2 drift) and,
on bad input, one line naming the file and key: never a traceback, never half-written output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.errors import EXIT_ERROR, EXIT_OK, InfraError
from infra.plans.judge.outcome import StackOutcome
from infra.plans.judge.report import Verdict
from infra.plans.read.diff import StackDiff
from infra.plans.read.model import Plan
from infra.settings import (
    REPO_ROOT,
    Cloud,
    EnvironmentSettings,
    known_environments,
    load_environment,
)


class UsageError(InfraError):
    """A command-line mistake, reported in one line."""


def _log(message: str, *, quiet: bool = False) -> None:
    if not quiet:
        print(message, flush=True)


def select_stacks(
    environments: Sequence[str] | None, clouds: Sequence[str] | None
) -> list[tuple[EnvironmentSettings, Cloud]]:
    """Load the named environments (default: all) and pair each with its clouds."""
    names = list(environments or known_environments())
    wanted: set[Cloud] | None = None
    if clouds:
        try:
            wanted = {Cloud(c) for c in clouds}
        except ValueError:
            raise UsageError(f"--cloud must be one of {[c.value for c in Cloud]}") from None
    stacks = []
    for name in names:
        env = load_environment(name)
        stacks += [(env, cloud) for cloud in env.clouds if wanted is None or cloud in wanted]
    return stacks


def pulumi_cli() -> str | None:
    return shutil.which("pulumi")


def _preview_stack(
    env: EnvironmentSettings, cloud: Cloud, *, offline: bool, save_plan: str | None
) -> tuple[Plan, StackDiff | None]:
    """One stack's plan, and for a live preview its steps as changes against the deployed stack."""
    if offline:
        from infra.plans.produce.offline import render  # noqa: PLC0415 - SDK import only when rendering

        return render(env, cloud), None
    from infra.plans.produce import live  # noqa: PLC0415

    saved = Path(save_plan) / f"{env.name}-{cloud.value}.plan.json" if save_plan else None
    return live.preview_with_changes(env, cloud, save_plan=saved)


def _preview_stacks(
    stacks: list[tuple[EnvironmentSettings, Cloud]], args: argparse.Namespace, *, offline: bool
) -> tuple[list[Plan], dict[str, StackOutcome], list[StackDiff]]:
    """Each stack's plan and outcome; a stack that fails is an outcome with its error."""
    from infra.plans.judge.outcome import StackOutcome  # noqa: PLC0415
    from infra.plans.produce.offline import RenderError  # noqa: PLC0415
    from infra.plans.read.model import PlanError  # noqa: PLC0415

    plans: list[Plan] = []
    outcomes: dict[str, StackOutcome] = {}
    # A live preview's steps are the changes against the deployed stack.
    live_changes: list[StackDiff] = []
    for env, cloud in stacks:
        key = f"{env.name}-{cloud.value}"
        try:
            plan, changes = _preview_stack(env, cloud, offline=offline, save_plan=args.save_plan)
        except (RenderError, PlanError) as exc:
            if args.quiet:  # a baseline render (--against) is all or nothing
                raise
            # One failed stack is reported with its error; the others still preview.
            outcomes[key] = StackOutcome(key, status="failed", error=str(exc))
            continue
        if changes is not None:
            live_changes.append(changes)
        plans.append(plan)
        custom = sum(1 for r in plan.resources if r.custom)
        outcomes[key] = StackOutcome(key, mode=plan.mode, resources=custom)
    return plans, outcomes, live_changes


def _print_outcomes(outcomes: list[StackOutcome], verdicts: list[Verdict], path: Path) -> None:
    """As short as Pulumi's own summary: a line per stack and per verdict; details in the report."""
    for outcome in outcomes:
        _log(outcome.console_line())
    for verdict in verdicts[:2]:  # policy and guard; cost is in each stack's line
        _log(f"{verdict.title}: {'pass' if verdict.ok else 'FAIL'}")
    total = sum(o.monthly_cost or 0.0 for o in outcomes)
    priced = sum(1 for o in outcomes if o.monthly_cost is not None)
    _log(f"Monthly cost: ${total:,.2f} for {priced} stacks (line items in the report)")
    _log(f"Report: {path}")


def cmd_preview(args: argparse.Namespace) -> int:
    from infra.plans.judge import report  # noqa: PLC0415 - keeps `--help` free of SDK imports
    from infra.plans.judge.outcome import write_results  # noqa: PLC0415
    from infra.plans.produce.checkout import render_ref  # noqa: PLC0415
    from infra.plans.read.diff import DiffError, diff_plan_sets  # noqa: PLC0415

    stacks = select_stacks(args.env, args.cloud)
    offline = args.offline or pulumi_cli() is None
    quiet = args.quiet
    if offline:
        reason = "--offline given" if args.offline else "Pulumi CLI not found"
        _log(
            f"Offline preview ({reason}): stacks render in-process under the Pulumi SDK's "
            "mock runtime; no cloud is contacted.",
            quiet=quiet,
        )
    else:
        refuse_examples(stacks)
        _log("Live preview: Pulumi Automation API against each environment's backend.", quiet=quiet)
    plans, outcomes, live_changes = _preview_stacks(stacks, args, offline=offline)

    diffs = None
    before: dict[str, Plan] | None = None
    if args.against:
        _log(f"Rendering {args.against} in a temporary worktree for the diff ...", quiet=quiet)
        before = render_ref(
            REPO_ROOT,
            args.against,
            [e.name for e, _ in stacks],
            sorted({c.value for _, c in stacks}),
            error=DiffError,
            context=f"--against {args.against}",
        )
        after = {p.key: p for p in plans}
        # A stack that failed has no "after": it is reported as failed, not as deleted.
        diffs = diff_plan_sets(
            {k: v for k, v in before.items() if k in after or k not in outcomes}, after
        )
    elif live_changes:
        diffs, args.against = live_changes, "the deployed stacks (live preview)"
    for diff in diffs or []:
        if diff.stack in outcomes:
            outcomes[diff.stack].count_changes(diff)

    # Policy, destructive-change guard and cost; quiet renders (a ref for --against) skip them.
    verdicts: list[Verdict] = []
    failed = any(o.status != "ok" for o in outcomes.values())
    if not quiet and plans:
        from infra.policy.checks import preview_checks  # noqa: PLC0415

        checks = preview_checks(plans, diffs, before, args.against, args.allow_replace or [])
        verdicts, failed = checks.verdicts, failed or checks.failed
        for outcome in outcomes.values():
            if outcome.status == "ok":
                checks.annotate(outcome)

    # Everything rendered: only now write, so a failure leaves no half-set of plans.
    out = Path(args.out)
    for plan in plans:
        plan.write(out)
    if not quiet:
        ordered = list(outcomes.values())
        text = report.markdown(plans, diffs, args.against, verdicts=verdicts, outcomes=ordered)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(text, encoding="utf-8")
        write_results(ordered, out)
        _print_outcomes(ordered, verdicts, out / "report.md")
    return EXIT_ERROR if failed else EXIT_OK


def _record_break_glass(environment: str, note: str) -> None:
    """Print a break-glass override and add it to the workflow run's summary when there is one."""
    _log(f"{environment}: {note}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as handle:
            handle.write(f"**{environment}: {note}**\n\n")


def _check_open_drift(
    github: object | None, repo: Path, target: str, override: str | None
) -> str | None:
    """Refuse to promote into an environment whose stacks have open drift issues.

    Returns the line recording an override, if one was given and needed.
    """
    if github is None:
        return None
    from github.Repository import Repository  # noqa: PLC0415

    from infra.delivery.drift_issues import open_drift  # noqa: PLC0415
    from infra.delivery.promote import PromotionError  # noqa: PLC0415

    if not isinstance(github, Repository):
        return None
    found = open_drift(github, load_environment(target, repo / "environments"))
    if not found:
        return None
    issues = ", ".join(f"{stack} (#{number})" for stack, number in found)
    reason = (override or "").strip()
    if not reason:
        raise PromotionError(
            f"{target} has open drift issues: {issues}; resolve them or pass "
            "--override-drift REASON (the reason is recorded in the pull request)"
        )
    return f"Promoted despite open drift in {issues}: {reason}"


def cmd_promote(args: argparse.Namespace) -> int:
    from infra.delivery import release  # noqa: PLC0415
    from infra.delivery.promote import default_body_path, promote  # noqa: PLC0415

    repo = Path(args.repo).resolve()
    body = Path(args.body) if args.body else default_body_path(repo, args.source, args.target)
    github = release.app_repository() if (args.open_pr or args.from_deployment) else None
    source_commit = args.source_commit
    drift_note = _check_open_drift(github, repo, args.target, args.override_drift)
    if github is not None and args.from_deployment:
        source_commit = release.deployed_commit(github, args.source)
        _log(f"{args.source} runs {source_commit[:12]} (its newest successful deployment).")
    result = promote(
        args.source,
        args.target,
        repo=repo,
        remote=args.remote,
        now=_parse_now(args.now),
        break_glass=args.break_glass,
        body_path=body,
        preview=not args.no_preview,
        source_commit=source_commit,
    )
    _log(
        f"Built {result.branch} at {result.commit[:12]}: {len(result.changes)} pins change, "
        f"{result.code_commits} commits of code."
    )
    for change in result.changes:
        _log(f"    {change.line()}")
    if result.break_glass:
        _record_break_glass(args.target, result.break_glass)
    if drift_note:
        with result.body_path.open("a", encoding="utf-8") as handle:
            handle.write(f"\n> **{drift_note}**\n")
    _log(f"PR body: {result.body_path}")
    if github is not None and args.open_pr:
        target_branch = load_environment(args.target, repo / "environments").branch
        release.push_branch(repo, args.remote, result.branch)
        title = f"Promote {args.source} to {args.target} ({result.release[:12]})"
        text = result.body_path.read_text(encoding="utf-8")
        pull = release.open_or_update_pr(github, result.branch, target_branch, title, text)
        _log(f"{'Opened' if pull.created else 'Updated'} pull request #{pull.number}.")
    return EXIT_OK


def _parse_now(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now {value}: not an ISO 8601 date and time") from None
    if moment.tzinfo is None:
        raise UsageError(f"--now {value}: give a UTC offset, for example 2026-12-24T10:00:00Z")
    return moment


def cmd_affected(args: argparse.Namespace) -> int:
    from infra.delivery.affected import affected, github_outputs, matrix_json  # noqa: PLC0415

    stacks = affected(Path(args.repo).resolve(), args.base, args.head, args.env)
    print(matrix_json(stacks))
    if args.github_output:
        with Path(args.github_output).open("a", encoding="utf-8") as handle:
            handle.write(github_outputs(stacks))
    return EXIT_OK


def refuse_examples(stacks: Sequence[tuple[EnvironmentSettings, Cloud]]) -> None:
    """Stop a live run, before the Pulumi CLI runs, on the first example value it would deploy."""
    from infra.placeholders import refuse_examples as refuse  # noqa: PLC0415

    for env in {env.name: env for env, _ in stacks}.values():
        refuse([env.name], [cloud for e, cloud in stacks if e.name == env.name])


def cmd_up(args: argparse.Namespace) -> int:
    stacks = select_stacks(args.env, args.cloud)
    if args.plan and len(stacks) != 1:
        # A saved update plan belongs to one stack; applying it to another would be refused mid-run.
        raise UsageError(
            f"--plan applies to one stack; select one with --env and --cloud "
            f"({len(stacks)} selected)"
        )
    from infra.delivery.freeze import check_freeze, utc_now  # noqa: PLC0415

    # Every environment is checked before anything deploys: one frozen environment stops all.
    now = utc_now()
    for env in {env.name: env for env, _ in stacks}.values():
        note = check_freeze(env, now, args.break_glass, f"deploy {env.name}")
        if note:
            _record_break_glass(env.name, note)
    if pulumi_cli() is None:
        print(
            "error: `up` needs the Pulumi CLI (it runs in GitHub Actions); none is on PATH. "
            "Nothing was deployed. Use `nox -s preview` to see what would change.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    refuse_examples(stacks)
    from infra.plans.produce import live  # noqa: PLC0415

    for env, cloud in stacks:
        _log(f"Deploying {env.name}-{cloud.value} ...")
        live.up(env, cloud, plan_file=Path(args.plan) if args.plan else None)
    return EXIT_OK


def _needs_cli(what: str) -> bool:
    if pulumi_cli() is None:
        print(
            f"error: {what} needs the Pulumi CLI and credentials; none is on PATH. "
            "Nothing was changed.",
            file=sys.stderr,
        )
        return False
    return True


def cmd_bootstrap(args: argparse.Namespace) -> int:
    stacks = select_stacks(args.env, args.cloud)
    if not _needs_cli("bootstrap"):
        return EXIT_ERROR
    from infra.plans.produce import live  # noqa: PLC0415

    for env, cloud in stacks:
        path = live.create_stack(env, cloud)
        shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        _log(
            f"{env.name}-{cloud.value}: stack ready in {env.pulumi.backend(cloud).backend_url} "
            f"with {env.pulumi.backend(cloud).secrets_provider}; commit {shown}"
        )
    return EXIT_OK


def cmd_release(args: argparse.Namespace) -> int:
    stacks = select_stacks(args.env, args.cloud)
    if not _needs_cli("release"):
        return EXIT_ERROR
    from infra.plans.produce import live  # noqa: PLC0415

    stuck = False
    report = []
    for env, cloud in stacks:
        pending = live.release(env, cloud)
        name = f"{env.name}-{cloud.value}"
        if pending:
            stuck = True
            person = "`pulumi refresh`, then `pulumi stack export`/`import`"
            report.append(
                f"{name}: lock released; {len(pending)} pending operation(s) need a "
                f"person ({person}):"
            )
            report += [f"    {line}" for line in pending]
        else:
            report.append(f"{name}: lock released; no pending operations")
    text = "\n".join(report)
    _log(text)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as handle:
            handle.write(f"```\n{text}\n```\n")
    return EXIT_ERROR if stuck else EXIT_OK


def cmd_drift(args: argparse.Namespace) -> int:
    from infra.plans.produce import live  # noqa: PLC0415

    if args.from_json:
        return live.drift_from_file(Path(args.from_json), Path(args.out))
    if pulumi_cli() is None:
        print(
            "error: drift needs the Pulumi CLI and credentials (it runs in GitHub Actions); "
            "use --from-json FILE to analyse a saved `pulumi preview --json`.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    stacks = select_stacks(args.env, args.cloud)
    refuse_examples(stacks)
    return live.drift(stacks, Path(args.out))


def cmd_dr_drill(args: argparse.Namespace) -> int:
    from infra import drill  # noqa: PLC0415 - SDK import only when rendering

    now = _parse_now(args.now)
    failed = False
    for name in args.env or ["production"]:
        result = drill.run(load_environment(name), now)
        report = drill.write(result, Path(args.out))
        for stack in result.stacks:
            for check in stack.checks:
                _log(
                    f"{stack.after.stack}: {'pass' if check.ok else 'FAIL'} {check.name}: "
                    f"{check.detail}"
                )
        _log(f"{name}: drill {'passed' if result.ok else 'FAILED'}; report {report}")
        failed = failed or not result.ok
    return EXIT_ERROR if failed else EXIT_OK


def _stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        action="append",
        metavar="ENV",
        help="environment to include (repeatable; default: all)",
    )
    parser.add_argument(
        "--cloud",
        action="append",
        metavar="CLOUD",
        help="cloud to include: aws or gcp (repeatable; default: all)",
    )


def _add_stack_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """bootstrap and release: the commands that create stacks and free a stuck one."""
    bootstrap = commands.add_parser(
        "bootstrap", help="create the stacks with their secrets providers (administrator)"
    )
    _stack_options(bootstrap)
    bootstrap.set_defaults(func=cmd_bootstrap)
    release = commands.add_parser(
        "release", help="after a failed deploy: cancel its lock, report pending operations"
    )
    _stack_options(release)
    release.set_defaults(func=cmd_release)


def _add_promote_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """promote: the command that builds the branch promoting a release to the next environment."""
    promote = commands.add_parser("promote", help="build the branch promoting pins to the next env")
    add = promote.add_argument
    add("--from", dest="source", required=True, metavar="ENV", help="source environment")
    add("--to", dest="target", required=True, metavar="ENV", help="target environment")
    add("--repo", default=".", help="the git checkout to work in (default: .)")
    add("--remote", default="origin", help="remote whose branches are used when present")
    add("--body", metavar="FILE", help="PR body file (default: build/promote/<from>-to-<to>.md)")
    add("--break-glass", metavar="REASON", help="promote into a frozen environment (recorded)")
    add("--now", metavar="TIMESTAMP", help="judge freezes at this time (ISO 8601, with offset)")
    add("--no-preview", action="store_true", help="skip the offline preview diff")
    add("--source-commit", metavar="SHA", help="the release: the commit deployed to the source")
    add(
        "--from-deployment",
        action="store_true",
        help="promote the source's newest successful deployment (needs PROMOTION_TOKEN)",
    )
    add(
        "--open-pr",
        action="store_true",
        help="push the branch, open or update the PR with the App token (PROMOTION_TOKEN)",
    )
    add(
        "--override-drift",
        metavar="REASON",
        help="promote although the target has open drift issues (recorded in the PR)",
    )
    promote.set_defaults(func=cmd_promote)


def _add_dr_drill(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dr_drill = commands.add_parser(
        "dr-drill", help="render a restore into a throwaway stack and check it offline"
    )
    add = dr_drill.add_argument
    add("--env", action="append", metavar="ENV", help="environment to drill (default: production)")
    add("--now", metavar="TIMESTAMP", help="restore to five minutes before this (default: now)")
    dr_drill.add_argument("--out", default="build/dr-drill", help="where plans and report go")
    dr_drill.set_defaults(func=cmd_dr_drill)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    preview = commands.add_parser("preview", help="render every stack and report what it deploys")
    _stack_options(preview)
    preview.add_argument(
        "--offline", action="store_true", help="render under the SDK mock runtime even with the CLI"
    )
    preview.add_argument("--against", metavar="REF", help="diff against this git ref")
    preview.add_argument("--out", default="build/plans", help="where plan files go")
    preview.add_argument("--quiet", action="store_true", help="write plan files only")
    preview.add_argument(
        "--allow-replace",
        action="append",
        metavar="URN",
        help="let the guard pass deleting/replacing this URN",
    )
    preview.add_argument(
        "--save-plan", metavar="DIR", help="live only: keep Pulumi's update plans for `up --plan`"
    )
    preview.set_defaults(func=cmd_preview)

    up = commands.add_parser("up", help="deploy stacks through the Automation API (CLI needed)")
    _stack_options(up)
    up.add_argument("--plan", help="apply this saved plan (from preview --save-plan)")
    up.add_argument(
        "--break-glass",
        metavar="REASON",
        help="deploy into a frozen environment; the reason is recorded",
    )
    up.set_defaults(func=cmd_up)

    _add_promote_command(commands)

    affected = commands.add_parser("affected", help="print the stacks a diff touches (matrix JSON)")
    add = affected.add_argument
    add("--base", required=True, metavar="REF", help="diff from the merge base with REF")
    add("--head", default="HEAD", metavar="REF", help="diff up to REF (default: HEAD)")
    add("--repo", default=".", help="the git checkout (default: .)")
    add("--env", action="append", metavar="ENV", help="keep this environment only (repeatable)")
    add("--github-output", metavar="FILE", help="also append matrix=, environments=, any= to FILE")
    affected.set_defaults(func=cmd_affected)

    drift = commands.add_parser("drift", help="check stacks for drift (exit 2 when drifted)")
    _stack_options(drift)
    drift.add_argument(
        "--from-json", metavar="FILE", help="analyse a saved `pulumi preview --json`"
    )
    drift.add_argument("--out", default="build/drift", help="where drift reports go")
    drift.set_defaults(func=cmd_drift)

    _add_stack_commands(commands)
    from infra.delivery.commands import add_commands as add_delivery_commands  # noqa: PLC0415

    _add_dr_drill(commands)

    from infra.init import add_command as add_init  # noqa: PLC0415
    from infra.policy.checks import add_commands  # noqa: PLC0415

    add_init(commands)

    add_commands(commands)
    add_delivery_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return code
