"""The offline policy runner: the rules applied to plan files, with per-environment enforcement.

Enforcement levels and exemptions come from ``[policy]`` in ``environments/<env>/settings.toml``.
An exemption waives one rule for the resources it names until its expiry date; once expired it
waives nothing and is itself a mandatory failure, so a stale waiver cannot linger unnoticed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from infra.markdown import table
from infra.plans.judge.report import Verdict
from infra.plans.read.formats import short
from infra.plans.read.model import Plan
from infra.policy.rules import RULES, Context, ResourceView, Rule, rules_by_name
from infra.settings import (
    ENVIRONMENTS_DIR,
    SETTINGS_FILE,
    Enforcement,
    EnvironmentSettings,
    PolicyExemption,
    SettingsError,
)

EXPIRED_RULE = "policy-exemption-expired"


@dataclass(frozen=True)
class Finding:
    stack: str
    rule: str
    controls: tuple[str, ...]
    level: Enforcement
    urn: str
    message: str
    exemption: PolicyExemption | None = None

    @property
    def blocking(self) -> bool:
        return self.level is Enforcement.MANDATORY and self.exemption is None


@dataclass(frozen=True)
class PolicyResult:
    findings: list[Finding]
    stacks: list[str]
    resources: int
    rules: int

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking]

    @property
    def ok(self) -> bool:
        return not self.failures


def views(plan: Plan) -> list[ResourceView]:
    return [
        ResourceView(
            urn=r.urn,
            type=r.type,
            name=r.name,
            inputs=r.inputs,
            protect=r.protect,
            dependencies=tuple(r.dependencies),
            custom=r.custom,
            provider=r.provider,
        )
        for r in plan.resources
    ]


def _settings_file(settings: EnvironmentSettings) -> str:
    return str(ENVIRONMENTS_DIR / settings.name / SETTINGS_FILE)


def check_policy_settings(settings: EnvironmentSettings) -> None:
    """Raise SettingsError if ``[policy]`` names a rule that does not exist, or would downgrade
    or exempt a deploy-readiness rule (the cloud refuses those resources whatever we decide)."""
    from infra.policy.readiness import readiness_names  # noqa: PLC0415 - registered on import

    readiness = readiness_names()
    file = _settings_file(settings)
    for name, level in settings.policy.enforcement.items():
        if name in readiness and level is not Enforcement.MANDATORY:
            message = "a deploy-readiness rule is mandatory in every environment"
            raise SettingsError(file, f"policy.enforcement.{name}", message)
    for index, exemption in enumerate(settings.policy.exemptions):
        if exemption.rule in readiness:
            message = (
                f"'{exemption.rule}' is a deploy-readiness rule: the cloud refuses the "
                "resource whatever the exemption says"
            )
            raise SettingsError(file, f"policy.exemptions[{index}].rule", message)
    known = rules_by_name()
    for name in settings.policy.enforcement:
        if name not in known:
            raise SettingsError(
                _settings_file(settings), f"policy.enforcement.{name}", "no such policy rule"
            )
    for index, exemption in enumerate(settings.policy.exemptions):
        if exemption.rule not in known:
            raise SettingsError(
                _settings_file(settings),
                f"policy.exemptions[{index}].rule",
                f"no such policy rule '{exemption.rule}'",
            )


def level_of(rule: Rule, settings: EnvironmentSettings) -> Enforcement:
    return settings.policy.enforcement.get(rule.name, rule.enforcement)


def evaluate_plan(
    plan: Plan, settings: EnvironmentSettings, today: dt.date | None = None
) -> list[Finding]:
    """Every violation in one plan, each with its level and any exemption that waives it."""
    check_policy_settings(settings)
    day = today or dt.datetime.now(dt.UTC).date()
    resources = views(plan)
    by_urn = {r.urn: r for r in resources}
    ctx = Context.of(settings)
    findings = []
    for rule in RULES:
        if plan.cloud not in rule.clouds:
            continue
        level = level_of(rule, settings)
        for violation in rule.evaluate(resources, ctx):
            view = by_urn.get(violation.urn)
            name = view.name if view is not None else None
            waiver = next(
                (
                    e
                    for e in settings.policy.exemptions
                    if e.waives(rule.name, violation.urn, name, day)
                ),
                None,
            )
            findings.append(
                Finding(
                    plan.key,
                    rule.name,
                    rule.controls,
                    level,
                    violation.urn,
                    violation.message,
                    waiver,
                )
            )
    return findings


def expired_exemptions(
    settings: EnvironmentSettings, today: dt.date | None = None
) -> list[Finding]:
    day = today or dt.datetime.now(dt.UTC).date()
    return [
        Finding(
            settings.name,
            EXPIRED_RULE,
            (f"{settings.name}/settings.toml policy.exemptions",),
            Enforcement.MANDATORY,
            e.resource,
            f"exemption from {e.rule} expired on {e.expires.isoformat()} ({e.reason})",
        )
        for e in settings.policy.exemptions
        if e.expires < day
    ]


def evaluate(
    plans: Sequence[Plan], settings: Sequence[EnvironmentSettings], today: dt.date | None = None
) -> PolicyResult:
    """Apply every rule to every plan; ``settings`` holds each plan's environment."""
    by_name = {s.name: s for s in settings}
    findings: list[Finding] = []
    for env in settings:
        findings += expired_exemptions(env, today)
    for plan in plans:
        findings += evaluate_plan(plan, by_name[plan.environment], today)
    return PolicyResult(
        findings=findings,
        stacks=[p.key for p in plans],
        resources=sum(1 for p in plans for r in p.resources if r.custom),
        rules=len(RULES),
    )


def verdict(result: PolicyResult) -> Verdict:
    """The report section: counts, then every finding, mandatory failures first."""
    failures = result.failures
    advisory = [f for f in result.findings if f.level is Enforcement.ADVISORY and not f.exemption]
    waived = [f for f in result.findings if f.exemption is not None]
    lines = [
        (
            f"{result.rules} rules over {result.resources} resources in {len(result.stacks)} "
            f"stacks: {len(failures)} mandatory failures, {len(advisory)} advisory findings, "
            f"{len(waived)} exempted."
        ),
        "",
    ]
    shown = sorted(
        result.findings,
        key=lambda f: (not f.blocking, f.exemption is not None, f.stack, f.rule, f.urn),
    )
    if shown:
        rows = []
        for f in shown:
            if f.exemption is not None:
                level = f"exempt until {f.exemption.expires}: {f.exemption.reason}"
            else:
                level = "**mandatory**" if f.blocking else f.level.value
            rule = f"`{f.rule}` ({', '.join(f.controls)})"
            rows.append([f.stack, rule, level, short(f.urn), f.message])
        lines += table(["Stack", "Rule", "Level", "Resource", "Finding"], rows)
    return Verdict("Policy", result.ok, "\n".join(lines))


def console(result: PolicyResult) -> str:
    """Plain lines for a terminal: one per finding, mandatory failures marked FAIL."""
    lines = []
    for f in sorted(result.findings, key=lambda f: (not f.blocking, f.stack, f.rule, f.urn)):
        mark = "FAIL" if f.blocking else ("exempt" if f.exemption else f.level.value)
        lines.append(f"{mark:9s} {f.stack:18s} {f.rule}: {short(f.urn)}: {f.message}")
    status = "pass" if result.ok else "FAIL"
    lines.append(
        f"policy: {status} ({result.rules} rules, {result.resources} resources, "
        f"{len(result.stacks)} stacks, {len(result.failures)} mandatory failures)"
    )
    return "\n".join(lines)
