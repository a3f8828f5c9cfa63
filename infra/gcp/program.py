"""The GCP stack program. It names no environment: the stack name selects environments/<env>/."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.gcp.network import Network, NetworkArgs
from infra.settings import environment
from infra.tagging import labels


def main() -> None:
    """Declare every GCP resource of the environment named by the stack."""
    settings = environment(pulumi.get_stack())
    assert settings.gcp is not None  # noqa: S101 - the stack exists only where clouds lists gcp
    if settings.gcp.project not in settings.gcp.allowed_projects:  # pragma: no cover - loader checks
        raise ValueError(f"project {settings.gcp.project} is not allowed")
    provider = gcp.Provider(
        "gcp",
        gcp.ProviderArgs(
            project=settings.gcp.project,
            region=settings.gcp.region,
            default_labels=labels(settings),
        ),
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    network = Network("network", NetworkArgs(settings=settings), opts=opts)

    pulumi.export("network_id", network.network_id)
    pulumi.export("subnet_id", network.subnet_id)
