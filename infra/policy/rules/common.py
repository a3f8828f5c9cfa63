"""What every policy rule shares: the resource view, the context, the rule type, input readers.

A resource rule sees one resource; a stack rule sees every resource of the stack (for checks that
pair resources: a bucket and its public access block, a load balancer and its WAF). Property
names are the providers' camelCase inputs, as plan files and pulumi-policy both carry them.
The one rule over both clouds (``protect-stateful-in-production``) is declared here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.plans.read.model import UNKNOWN
from infra.plans.read.stateful import is_replica, is_stateful
from infra.settings import Enforcement, EnvironmentSettings, Tier, tier_of

WORLD = frozenset({"0.0.0.0/0", "::/0"})
# Ports the public load balancer may open to the world.
WEB_PORTS = frozenset({80, 443})
# Environment variable names that carry credentials; their values belong in secret references.
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "PRIVATE_KEY", "CREDENTIAL", "DSN")


@dataclass(frozen=True)
class ResourceView:
    """What a rule sees of one resource: the same from a plan file and from pulumi-policy."""

    urn: str
    type: str
    name: str
    inputs: Mapping[str, Any]
    protect: bool = False
    dependencies: tuple[str, ...] = ()
    custom: bool = True
    # The provider reference (``<urn>::<id>``); the deploy-readiness rules follow it.
    provider: str = ""


@dataclass(frozen=True)
class Context:
    """The environment a stack belongs to, as far as the rules need it."""

    environment: str
    min_log_retention_days: int = 1
    # None: the tier environments/promotion.toml gives the environment (a stack of no
    # environment there is held to the dev tier's rules).
    tier: Tier | None = None

    @property
    def _tier(self) -> Tier:
        return self.tier or tier_of(self.environment) or Tier.DEV

    @property
    def production(self) -> bool:
        return self._tier is Tier.PRODUCTION

    @property
    def hardened(self) -> bool:
        """Data loss or an outage costs more than a redeploy (staging and production tiers)."""
        return self._tier.hardened

    @classmethod
    def of(cls, settings: EnvironmentSettings) -> Context:
        return cls(settings.name, settings.logs.retention_days, settings.tier)


@dataclass(frozen=True)
class Violation:
    urn: str
    message: str


ResourceCheck = Callable[[ResourceView, Context], Iterable[str]]
StackCheck = Callable[[Sequence[ResourceView], Context], Iterable[Violation]]


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One check: a resource rule judges each resource of ``types``, a stack rule the stack."""

    name: str
    description: str
    controls: tuple[str, ...]
    clouds: tuple[str, ...]
    enforcement: Enforcement = Enforcement.MANDATORY
    types: tuple[str, ...] = ()
    resource_check: ResourceCheck | None = None
    stack_check: StackCheck | None = None

    def __post_init__(self) -> None:
        if (self.resource_check is None) == (self.stack_check is None):
            raise ValueError(f"rule {self.name}: give either resource_check or stack_check")
        if self.resource_check is not None and not self.types:
            raise ValueError(f"rule {self.name}: a resource rule names the types it judges")

    @property
    def label(self) -> str:
        return f"{self.name} ({', '.join(self.controls)})"

    def evaluate(self, resources: Sequence[ResourceView], ctx: Context) -> list[Violation]:
        """Every violation of this rule in a stack."""
        if self.stack_check is not None:
            return list(self.stack_check(resources, ctx))
        assert self.resource_check is not None  # noqa: S101 - __post_init__ requires one of the two
        return [
            Violation(r.urn, message)
            for r in resources
            if r.type in self.types
            for message in self.resource_check(r, ctx)
        ]


class Catalogue:
    """The rules one module declares, in declaration order, all for the same cloud(s)."""

    def __init__(self, *clouds: str) -> None:
        self.clouds = clouds
        self.rules: list[Rule] = []

    def add(self, rule: Rule) -> None:
        """Add a rule; a resource type of another cloud than the catalogue's is an error."""
        foreign = [t for t in rule.types if t.split(":", 1)[0] not in self.clouds]
        if foreign:
            raise ValueError(f"rule {rule.name}: {', '.join(foreign)} is not {self.clouds}")
        self.rules.append(rule)

    def resource_rule(
        self,
        *,
        name: str,
        types: Sequence[str],
        controls: Sequence[str],
        description: str,
        enforcement: Enforcement = Enforcement.MANDATORY,
    ) -> Callable[[ResourceCheck], ResourceCheck]:
        """Declare the decorated function as a rule over each resource of ``types``."""

        def register(check: ResourceCheck) -> ResourceCheck:
            self.add(
                Rule(
                    name=name,
                    description=description,
                    controls=tuple(controls),
                    clouds=self.clouds,
                    enforcement=enforcement,
                    types=tuple(types),
                    resource_check=check,
                )
            )
            return check

        return register

    def stack_rule(
        self,
        *,
        name: str,
        controls: Sequence[str],
        description: str,
        enforcement: Enforcement = Enforcement.MANDATORY,
    ) -> Callable[[StackCheck], StackCheck]:
        """Declare the decorated function as a rule over a whole stack."""

        def register(check: StackCheck) -> StackCheck:
            self.add(
                Rule(
                    name=name,
                    description=description,
                    controls=tuple(controls),
                    clouds=self.clouds,
                    enforcement=enforcement,
                    stack_check=check,
                )
            )
            return check

        return register

    def value_rule(
        self,
        *,
        name: str,
        types: Sequence[str],
        controls: Sequence[str],
        description: str,
        check: ValueCheck,
        enforcement: Enforcement = Enforcement.MANDATORY,
    ) -> None:
        """Declare a rule that compares one input of each resource of ``types`` with its values."""
        self.resource_rule(
            name=name,
            types=types,
            controls=controls,
            description=description,
            enforcement=enforcement,
        )(check)


# -- reading inputs --------------------------------------------------------------------------------


def dig(node: Any, *path: str) -> Any:
    """A nested input; a one-element list (a nested block) is looked through."""
    for part in path:
        if isinstance(node, list) and len(node) == 1:
            node = node[0]
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def get(inputs: Mapping[str, Any], path: str) -> Any:
    """A nested input by dotted path ("settings.ipConfiguration.sslMode"), as ``dig`` reads it."""
    return dig(inputs, *path.split("."))


def is_unknown(value: Any) -> bool:
    # A live preview leaves values computed from other new resources unknown.
    return isinstance(value, str) and value == UNKNOWN


def is_true(inputs: Mapping[str, Any], path: str) -> bool:
    value = get(inputs, path)
    return value is True or is_unknown(value)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def from_json(value: Any) -> Any:
    """A JSON-encoded input (container definitions, default tags) as data; None if malformed."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # A live preview carries every number as a float (protobuf Struct values).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def refers_to(resource: ResourceView, target: ResourceView, *keys: str) -> bool:
    """Whether ``resource`` names ``target``: by dependency, or by an input equal to its name."""
    if target.urn in resource.dependencies:
        return True
    names = {
        v for k in ("name", "bucket", "identifier") if isinstance(v := target.inputs.get(k), str)
    }
    return any(isinstance(v := resource.inputs.get(k), str) and v in names for k in keys)


def of_types(resources: Sequence[ResourceView], *types: str) -> list[ResourceView]:
    return [r for r in resources if r.type in types]


def provider_defaults(
    resources: Sequence[ResourceView], provider_type: str, key: str
) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for p in of_types(resources, provider_type):
        value = from_json(p.inputs.get(key))
        if isinstance(value, Mapping):
            # AWS nests them: defaultTags = {"tags": {...}}; GCP: defaultLabels = {...}.
            inner = value.get("tags", value)
            merged |= dict(inner) if isinstance(inner, Mapping) else {}
    return merged


# -- one input against its values -----------------------------------------------------------------

# ``expected`` holding this: any value passes, as long as the input is set (not empty).
ANY_VALUE = "*"


def _one_of(value: Any, values: Sequence[Any]) -> bool:
    # True and False match only themselves: 1 == True in Python, but a 1 is no flag turned on.
    return any(
        value is v if isinstance(v, bool) else not isinstance(value, bool) and value == v
        for v in values
    )


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "unset" if value is None else str(value)


@dataclass(frozen=True, kw_only=True)
class ValueCheck:
    """A rule's check of one input against the values it may take (or must not take).

    After checkov's ``BaseResourceValueCheck`` (bridgecrewio/checkov,
    checkov/terraform/checks/resource/base_resource_value_check.py): an inspected key, the
    expected values (``True`` unless told; ``ANY_VALUE`` for any value), and what a missing key
    means (here the provider's ``default``, else unset, which fails an expected value). As
    ``is_true`` always has, an unknown value from a live preview counts as true.
    """

    key: str  # a dotted path into the inputs, as ``get`` reads it
    expected: tuple[Any, ...] = (True,)
    # When given, these values fail and any other passes (``expected`` is then not read).
    forbidden: tuple[Any, ...] = ()
    # The value the provider takes when the input is not set.
    default: Any = None
    # Judged in the production tier only (the message says "in production").
    production_only: bool = False
    # Which resources of the rule's types are judged at all (None: every one).
    applies: Callable[[ResourceView], bool] | None = None
    # Appended to the "no <key>" message of an ANY_VALUE check: what the missing value means.
    why: str = ""

    def _finding(self, value: Any) -> str | None:
        if self.forbidden:
            return f"{self.key} is {_shown(value)}" if _one_of(value, self.forbidden) else None
        if ANY_VALUE in self.expected:
            return None if value else f"no {self.key}" + (f": {self.why}" if self.why else "")
        if _one_of(value, self.expected) or (True in self.expected and is_unknown(value)):
            return None
        if len(self.expected) == 1 and isinstance(self.expected[0], bool):
            return f"{self.key} is not {_shown(self.expected[0])}"
        return f"{self.key} is {_shown(value)}"

    def __call__(self, r: ResourceView, ctx: Context) -> Iterator[str]:
        if self.production_only and not ctx.production:
            return
        if self.applies is not None and not self.applies(r):
            return
        value = get(r.inputs, self.key)
        finding = self._finding(self.default if value is None else value)
        if finding is not None:
            yield finding + (" in production" if self.production_only else "")


def primary(r: ResourceView) -> bool:
    """Not a read replica: a replica's backups, availability and protection are its source's."""
    return not is_replica(r.type, r.inputs)


# -- both clouds ---------------------------------------------------------------------------------

BOTH = Catalogue("aws", "gcp")


@BOTH.stack_rule(
    name="protect-stateful-in-production",
    controls=("Pulumi protect (AWS Security Hub RDS.8 intent)",),
    description="Every resource that holds data is `protect`ed in production.",
)
def protect_stateful(resources: Sequence[ResourceView], ctx: Context) -> Iterator[Violation]:
    if not ctx.production:
        return
    for r in resources:
        if r.custom and is_stateful(r.type) and primary(r) and not r.protect:
            yield Violation(r.urn, "stateful resource without protect in production")
