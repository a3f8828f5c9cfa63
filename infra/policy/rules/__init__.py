"""The policy catalogue: pure functions over a resource view, written once for both runners.

The rules are split by cloud (``aws.py``, ``gcp.py``); ``common.py`` holds what they share (the
resource view, the context, the rule type, the input readers) and the one rule over both clouds.
The catalogue is their rules in that order; the deploy-readiness family
(``infra/policy/readiness/``) appends its own when it is imported, which ``infra.policy`` does.
"""

from __future__ import annotations

from infra.policy.rules import aws, gcp
from infra.policy.rules.common import (
    BOTH,
    Context,
    ResourceView,
    Rule,
    Violation,
    as_int,
    as_list,
)

__all__ = [
    "RULES",
    "Context",
    "ResourceView",
    "Rule",
    "Violation",
    "as_int",
    "as_list",
    "rules_by_name",
]

RULES: list[Rule] = [*aws.AWS.rules, *gcp.GCP.rules, *BOTH.rules]


def rules_by_name() -> dict[str, Rule]:
    return {rule.name: rule for rule in RULES}
