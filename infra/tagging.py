"""Tags (AWS) and labels (GCP) that every resource carries."""

from __future__ import annotations

import re

from infra.settings import EnvironmentSettings

MANAGED_BY = "pulumi"
# Keys every taggable resource must carry; the tests and the policy pack check them.
REQUIRED_TAGS = ("environment", "service", "cost-centre", "managed-by", "repository")
REQUIRED_LABELS = ("environment", "service", "cost-centre", "managed-by")


def tags(settings: EnvironmentSettings, service: str = "platform", **extra: str) -> dict[str, str]:
    """AWS tags for a resource that belongs to ``service``."""
    return {
        "environment": settings.name,
        "service": service,
        "cost-centre": settings.cost_centre,
        "managed-by": MANAGED_BY,
        "repository": settings.repository,
        **extra,
    }


def _label_value(value: str) -> str:
    # GCP labels: lowercase letters, digits, '_' and '-', at most 63 characters.
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def labels(settings: EnvironmentSettings, service: str = "platform") -> dict[str, str]:
    """GCP labels for a resource that belongs to ``service``."""
    return {
        "environment": _label_value(settings.name),
        "service": _label_value(service),
        "cost-centre": _label_value(settings.cost_centre),
        "managed-by": MANAGED_BY,
    }
