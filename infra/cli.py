"""`python -m infra`: the commands behind the Nox sessions (preview, up, drift, ...).

Every command ends with an exit code (0 success, 1 error or mandatory failure, 2 drift) and,
on bad input, one line naming the file and key: never a traceback, never half-written output.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.settings import Cloud, EnvironmentSettings, SettingsError, known_environments, load_environment

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_DRIFT = 2


class UsageError(Exception):
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


def cmd_preview(args: argparse.Namespace) -> int:
    from infra.plans import report  # noqa: PLC0415 - keeps `--help` free of SDK imports
    from infra.plans.diff import diff_plan_sets, render_ref  # noqa: PLC0415
    from infra.plans.model import Plan  # noqa: PLC0415

    stacks = select_stacks(args.env, args.cloud)
    offline = args.offline or pulumi_cli() is None
    quiet = args.quiet
    if offline:
        reason = "--offline given" if args.offline else "Pulumi CLI not found"
        _log(f"Offline preview ({reason}): stacks render in-process under the Pulumi SDK's "
             "mock runtime; no cloud is contacted.", quiet=quiet)  # fmt: skip
    else:
        _log("Live preview: Pulumi Automation API against each environment's backend.", quiet=quiet)

    plans: list[Plan] = []
    started = time.perf_counter()
    for env, cloud in stacks:
        began = time.perf_counter()
        _log(f"[{len(plans) + 1}/{len(stacks)}] {env.name}-{cloud.value} ...", quiet=quiet)
        if offline:
            from infra.plans.offline import render  # noqa: PLC0415

            plan = render(env, cloud)
        else:
            from infra.plans import live  # noqa: PLC0415

            plan = live.preview(env, cloud)
        plans.append(plan)
        _log(report.summary(plan) + f"\n    ({time.perf_counter() - began:.2f} s)", quiet=quiet)

    diffs = None
    if args.against:
        _log(f"Rendering {args.against} in a temporary worktree for the diff ...", quiet=quiet)
        before = render_ref(args.against, [e.name for e, _ in stacks], sorted({c.value for _, c in stacks}))
        diffs = diff_plan_sets(before, {p.key: p for p in plans})

    # Everything rendered: only now write, so a failure leaves no half-set of plans.
    out = Path(args.out)
    for plan in plans:
        plan.write(out)
    if not args.quiet:
        text = report.markdown(plans, diffs, args.against)
        path = out / "report.md"
        path.write_text(text, encoding="utf-8")
        if diffs is not None:
            for diff in diffs:
                print(report.diff_markdown(diff))
        _log(f"Wrote {len(plans)} plan files and {path} in {time.perf_counter() - started:.2f} s.")
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    stacks = select_stacks(args.env, args.cloud)
    if pulumi_cli() is None:
        print("error: `up` needs the Pulumi CLI (it runs in GitHub Actions); none is on PATH. "
              "Nothing was deployed. Use `nox -s preview` to see what would change.",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    from infra.plans import live  # noqa: PLC0415

    for env, cloud in stacks:
        _log(f"Deploying {env.name}-{cloud.value} ...")
        live.up(env, cloud, plan_file=Path(args.plan) if args.plan else None)
    return EXIT_OK


def cmd_drift(args: argparse.Namespace) -> int:
    from infra.plans import live  # noqa: PLC0415

    if args.from_json:
        return live.drift_from_file(Path(args.from_json), Path(args.out))
    if pulumi_cli() is None:
        print("error: drift needs the Pulumi CLI and credentials (it runs in GitHub Actions); "
              "use --from-json FILE to analyse a saved `pulumi preview --json`.", file=sys.stderr)  # fmt: skip
        return EXIT_ERROR
    return live.drift(select_stacks(args.env, args.cloud), Path(args.out))


def _stack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", action="append", metavar="ENV",
                        help="environment to include (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--cloud", action="append", metavar="CLOUD",
                        help="cloud to include: aws or gcp (repeatable; default: all)")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    preview = commands.add_parser("preview", help="render every stack and report what it deploys")
    _stack_options(preview)
    preview.add_argument("--offline", action="store_true",
                         help="render under the SDK mock runtime even if the CLI is present")  # fmt: skip
    preview.add_argument("--against", metavar="REF", help="diff against this git ref")
    preview.add_argument("--out", default="build/plans", help="where plan files go")
    preview.add_argument("--quiet", action="store_true", help="write plan files only")
    preview.set_defaults(func=cmd_preview)

    up = commands.add_parser("up", help="deploy stacks through the Automation API (CLI needed)")
    _stack_options(up)
    up.add_argument("--plan", help="apply this saved plan (from preview --save-plan)")
    up.set_defaults(func=cmd_up)

    drift = commands.add_parser("drift", help="check stacks for drift (exit 2 when drifted)")
    _stack_options(drift)
    drift.add_argument("--from-json", metavar="FILE", help="analyse a saved `pulumi preview --json`")
    drift.add_argument("--out", default="build/drift", help="where drift reports go")
    drift.set_defaults(func=cmd_drift)
    return root


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from infra.plans.diff import DiffError  # noqa: PLC0415
    from infra.plans.model import PlanError  # noqa: PLC0415
    from infra.plans.offline import RenderError  # noqa: PLC0415

    try:
        code: int = args.func(args)
    except (SettingsError, UsageError, PlanError, RenderError, DiffError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return code
