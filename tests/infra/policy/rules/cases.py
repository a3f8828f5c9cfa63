"""What the policy rule tests share: resources to judge, and a rule's passing and failing case."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.policy.rules import Context, ResourceView, Rule

URN = "urn:pulumi:{env}::billing-{cloud}::{type}::{name}"


def res(
    type_: str,
    logical: str = "thing",
    env: str = "production",
    /,
    *,
    protect: bool = False,
    deps: tuple[str, ...] = (),
    **inputs: Any,
) -> ResourceView:
    cloud = type_.split(":", 1)[0]
    urn = URN.format(env=env, cloud=cloud, type=type_, name=logical)
    return ResourceView(urn, type_, logical, inputs, protect, deps)


def urn_of(type_: str, name: str, env: str = "production") -> str:
    return URN.format(env=env, cloud=type_.split(":", 1)[0], type=type_, name=name)


@dataclass(frozen=True)
class Case:
    passing: list[ResourceView]
    failing: list[ResourceView]
    env: str = "production"
    extra: dict[str, Any] = field(default_factory=dict)


def check_case(rule: Rule, case: Case) -> None:
    """The rule finds nothing in the passing resources, and something in each failing stack."""
    ctx = Context(case.env, **case.extra)
    assert rule.evaluate(case.passing, ctx) == []
    violations = rule.evaluate(case.failing, ctx)
    assert violations, f"{rule.name} found nothing wrong with {case.failing}"
    failing_urns = {r.urn for r in case.failing}
    assert {v.urn for v in violations} <= failing_urns
    assert all(v.message for v in violations)


def in_dev(resources: list[ResourceView]) -> list[ResourceView]:
    """The same resources in the dev stack."""
    return [
        ResourceView(r.urn.replace("production", "dev"), r.type, r.name, r.inputs, r.protect)
        for r in resources
    ]
