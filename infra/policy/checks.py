"""The three verdicts every preview ends with (policy, destructive-change guard, cost), and the
`python -m infra policy|cost PLAN.json...` commands."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.cost import estimate as cost
from infra.plans.judge import guard
from infra.plans.judge.allowances import load_allowances
from infra.plans.judge.outcome import StackOutcome
from infra.plans.judge.report import Verdict
from infra.plans.read.diff import StackDiff
from infra.plans.read.model import PLAN_DIR, Plan, PlanError, load_plan
from infra.policy import runner
from infra.settings import EnvironmentSettings, load_environment


def _settings(plans: Sequence[Plan]) -> list[EnvironmentSettings]:
    return [load_environment(name) for name in sorted({p.environment for p in plans})]


@dataclass(frozen=True)
class PreviewChecks:
    """The three checks of a preview, kept whole so each stack's line can quote its part."""

    policy: runner.PolicyResult
    guarded: guard.GuardResult | None
    costs: list[cost.Estimate]
    verdicts: list[Verdict]

    @property
    def failed(self) -> bool:
        return not self.policy.ok or (self.guarded is not None and not self.guarded.ok)

    def annotate(self, outcome: StackOutcome) -> None:
        """Copy this stack's share of the verdicts into its outcome."""
        mine = [f for f in self.policy.findings if f.stack == outcome.stack]
        outcome.policy_failures = sum(1 for f in mine if f.blocking)
        outcome.policy_advisory = sum(1 for f in mine if not f.blocking and f.exemption is None)
        if self.guarded is not None:
            outcome.guard_blocked = sum(1 for s, _ in self.guarded.blocked if s == outcome.stack)
            outcome.guard_allowed = sum(1 for s, _ in self.guarded.allowed if s == outcome.stack)
        for estimate in self.costs:
            if estimate.stack == outcome.stack:
                outcome.monthly_cost = round(estimate.total, 2)


def preview_checks(
    plans: Sequence[Plan],
    diffs: Sequence[StackDiff] | None = None,
    before: Mapping[str, Plan] | None = None,
    against: str | None = None,
    allow: Sequence[str] = (),
) -> PreviewChecks:
    """Policy, the destructive-change guard (with each environment's allow-replace.toml), cost."""
    policy = runner.evaluate(plans, _settings(plans))
    reviewed = [a for env in sorted({p.environment for p in plans}) for a in load_allowances(env)]
    guarded = None
    # Without a baseline nothing is checked, but an expired allowance still fails the preview.
    if diffs is not None or any(a.expired(dt.datetime.now(dt.UTC).date()) for a in reviewed):
        guarded = guard.guard(diffs or [], allow, source=f"`{against}`", reviewed=reviewed)
    after = [cost.estimate(p) for p in plans]
    earlier = [cost.estimate(p) for p in before.values()] if before is not None else None
    verdicts = [
        runner.verdict(policy),
        guard.verdict(guarded),
        cost.verdict(after, earlier, against),
    ]
    return PreviewChecks(policy, guarded, after, verdicts)


def preview_verdicts(
    plans: Sequence[Plan],
    diffs: Sequence[StackDiff] | None = None,
    before: Mapping[str, Plan] | None = None,
    against: str | None = None,
    allow: Sequence[str] = (),
) -> tuple[list[Verdict], bool]:
    """The policy, guard and cost verdicts, and whether any of them fails the preview."""
    checks = preview_checks(plans, diffs, before, against, allow)
    return checks.verdicts, checks.failed


def plan_files(names: Sequence[str]) -> list[Plan]:
    """The named plan files, or every plan in build/plans/ when none are named."""
    paths = [Path(n) for n in names] or sorted(PLAN_DIR.glob("*.json"))
    if not paths:
        raise PlanError(PLAN_DIR, None, "no plan files: run `nox -s preview -- --offline` first")
    return [load_plan(p) for p in paths]


def cmd_policy(args: argparse.Namespace) -> int:
    """Apply the policy rules to plan files; exit 1 on a mandatory failure."""
    plans = plan_files(args.plans)
    result = runner.evaluate(plans, _settings(plans))
    print(runner.console(result))
    if args.report:
        verdict = runner.verdict(result)
        status = "pass" if verdict.ok else "FAIL"
        text = f"## {verdict.title}: {status}\n\n{verdict.markdown}\n"
        Path(args.report).write_text(text, encoding="utf-8")
    return 0 if result.ok else 1


def cmd_cost(args: argparse.Namespace) -> int:
    """Print each plan's monthly estimate with its line items, and the total per environment."""
    estimates = [cost.estimate(p) for p in plan_files(args.plans)]
    for e in estimates:
        print(cost.console(e))
    for env, total in cost.by_environment(estimates).items():
        print(f"{env}: {cost.money(total)} per month")
    if args.json:
        Path(args.json).write_text(cost.to_json(estimates) + "\n", encoding="utf-8")
    return 0


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `policy` and `cost` on the `python -m infra` parser."""
    policy = commands.add_parser("policy", help="check plan files against the policy rules")
    policy.add_argument("plans", nargs="*", metavar="PLAN.json", help="default: build/plans/*.json")
    policy.add_argument("--report", metavar="FILE", help="also write the markdown section here")
    policy.set_defaults(func=cmd_policy)
    estimate = commands.add_parser("cost", help="estimate the monthly cost of plan files")
    estimate.add_argument(
        "plans", nargs="*", metavar="PLAN.json", help="default: build/plans/*.json"
    )
    estimate.add_argument("--json", metavar="FILE", help="also write the estimates as JSON")
    estimate.set_defaults(func=cmd_cost)
