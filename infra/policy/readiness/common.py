"""What every deploy-readiness rule shares: registration, input reading, the dependency graph."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.plans.read.model import UNKNOWN
from infra.policy.rules import RULES
from infra.policy.rules.common import (
    Context,
    ResourceCheck,
    ResourceView,
    Rule,
    StackCheck,
    get,
)
from infra.settings import Enforcement

# The readiness family, in registration order; each is also in RULES (one runner, one pack).
READINESS: list[Rule] = []


def _register(rule: Rule) -> None:
    READINESS.append(rule)
    RULES.append(rule)


def resource_rule(
    *, name: str, types: Sequence[str], source: str, description: str
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
    *, name: str, cloud: str, source: str, description: str
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


def name_rule(
    *, name: str, types: Sequence[str], source: str, description: str, check: NameCheck
) -> None:
    """A mandatory rule that checks one name-like input of each resource of ``types``."""
    resource_rule(name=name, types=types, source=source, description=description)(check)


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


@dataclass(frozen=True, kw_only=True)
class NameCheck:
    """A rule's check of one name-like input against the API's pattern and maximum length.

    The deploy-readiness counterpart of the policy rules' ``ValueCheck``
    (infra/policy/rules/common.py): a rule whose whole logic is ``check_name`` over one input is
    declared as data with ``name_rule``; a rule that reads more stays a function.
    """

    key: str  # a dotted path into the inputs, as ``get`` reads it
    pattern: str  # the whole value must match (re.fullmatch)
    max_length: int
    service: str  # who refuses the value, as the message names it ("KMS allows at most 256")
    reference: str  # the API reference the pattern and the length come from

    def __post_init__(self) -> None:
        # The check's docstring is its reference, as a function rule's docstring is its link.
        object.__setattr__(self, "__doc__", self.reference)

    def __call__(self, r: ResourceView, _: Context) -> Iterator[str]:
        value = get(r.inputs, self.key)
        return check_name(value, self.key, self.pattern, self.max_length, self.service)


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
