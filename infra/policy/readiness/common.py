"""What every deploy-readiness rule shares: registration, input reading, the dependency graph."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from infra.plans.read.model import UNKNOWN
from infra.policy.rules import RULES
from infra.policy.rules.common import Context, ResourceView, Rule, Violation
from infra.settings import Enforcement

# The readiness family, in registration order; each is also in RULES (one runner, one pack).
READINESS: list[Rule] = []

ResourceCheck = Callable[[ResourceView, Context], Iterable[str]]
StackCheck = Callable[[Sequence[ResourceView], Context], Iterable[Violation]]


def _register(rule: Rule) -> None:
    READINESS.append(rule)
    RULES.append(rule)


def resource_rule(
    name: str, types: Sequence[str], source: str, description: str
) -> Callable[[ResourceCheck], ResourceCheck]:
    """A mandatory rule over each resource of ``types``; ``source`` is the API or provider check."""

    def register(check: ResourceCheck) -> ResourceCheck:
        _register(
            Rule(
                name=name,
                description=description,
                controls=(source,),
                types=tuple(types),
                resource_check=check,
                enforcement=Enforcement.MANDATORY,
                clouds=(types[0].split(":", 1)[0],),
            )
        )
        return check

    return register


def stack_rule(
    name: str, cloud: str, source: str, description: str
) -> Callable[[StackCheck], StackCheck]:
    """A mandatory rule over a whole stack (pairs of resources, dependency order)."""

    def register(check: StackCheck) -> StackCheck:
        _register(
            Rule(
                name=name,
                description=description,
                controls=(source,),
                stack_check=check,
                enforcement=Enforcement.MANDATORY,
                clouds=(cloud,),
            )
        )
        return check

    return register


# -- reading inputs --------------------------------------------------------------------------------


def unknown(value: Any) -> bool:
    """A live preview leaves values computed from new resources unknown: nothing to judge."""
    return isinstance(value, str) and UNKNOWN in value


def check_name(value: Any, key: str, pattern: str, max_length: int, what: str) -> Iterator[str]:
    """One message when ``value`` breaks the API's pattern or length for ``key``."""
    if value is None or unknown(value):
        return
    text = str(value)
    if len(text) > max_length:
        yield f"{key} '{text}' is {len(text)} characters; {what} allows at most {max_length}"
    elif not re.fullmatch(pattern, text):
        yield f"{key} '{text}' does not match {what}'s pattern {pattern}"


# -- the dependency graph --------------------------------------------------------------------------


def by_urn(resources: Sequence[ResourceView]) -> dict[str, ResourceView]:
    return {r.urn: r for r in resources}


def upstream(resource: ResourceView, index: Mapping[str, ResourceView]) -> set[str]:
    """Every URN the engine creates before ``resource``: its dependencies and theirs, and its
    provider's (a provider that depends on a resource holds back everything that uses it)."""
    seen: set[str] = set()
    todo = [*resource.dependencies, *([provider_urn(resource)] if resource.provider else [])]
    while todo:
        urn = todo.pop()
        if urn in seen:
            continue
        seen.add(urn)
        found = index.get(urn)
        if found is not None:
            todo += found.dependencies
            if found.provider:
                todo.append(provider_urn(found))
    return seen


def provider_urn(resource: ResourceView) -> str:
    """The provider reference ``<urn>::<id>`` as a URN."""
    head, _, _ = resource.provider.rpartition("::")
    return head or resource.provider


def of_types(resources: Sequence[ResourceView], *types: str) -> list[ResourceView]:
    return [r for r in resources if r.type in types]
