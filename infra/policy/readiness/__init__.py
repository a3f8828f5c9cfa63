"""Deploy readiness: what a cloud API or a provider rejects at create time, caught offline.

The SDK's mock runtime accepts any value, so an offline preview alone would pass a plan that
the first `pulumi up` fails on. These rules read the same plan resources as the policy rules and
fail the preview with the resource and the key: character sets and lengths per resource type,
value combinations (Fargate sizes, Cloud SQL retention), ordering the engine cannot infer (a
secret read before it has a version, a resource created before its API is enabled, a CMEK
user created before its key grant propagated), certificates that are never validated, and
images the runtime cannot pull.

Each rule is named for the API or provider check it reflects, with a link in its docstring and
in its controls. They are mandatory in every environment: ``[policy]`` settings may neither
downgrade nor exempt them (infra/policy/runner.py refuses such settings).
"""

from __future__ import annotations

from infra.policy.readiness import aws, gcp
from infra.policy.readiness.common import READINESS

__all__ = ["READINESS", "aws", "gcp", "readiness_names"]


def readiness_names() -> frozenset[str]:
    return frozenset(rule.name for rule in READINESS)
