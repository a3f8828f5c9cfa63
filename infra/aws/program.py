"""The AWS stack program. It names no environment: the stack name selects environments/<env>/."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.aws.network import Network, NetworkArgs
from infra.settings import environment
from infra.tagging import tags


def main() -> None:
    """Declare every AWS resource of the environment named by the stack."""
    settings = environment(pulumi.get_stack())
    assert settings.aws is not None  # noqa: S101 - the stack exists only where clouds lists aws
    provider = aws.Provider(
        "aws",
        aws.ProviderArgs(
            region=settings.aws.region,
            # The allowed-accounts guard: credentials for any other account fail before a change.
            allowed_account_ids=settings.aws.allowed_account_ids,
            default_tags=aws.ProviderDefaultTagsArgs(tags=tags(settings)),
        ),
    )
    opts = pulumi.ResourceOptions(providers=[provider])
    zones = aws.get_availability_zones_output(
        state="available", opts=pulumi.InvokeOutputOptions(provider=provider)
    ).names.apply(lambda names: names[: settings.aws.availability_zones if settings.aws else 0])

    network = Network("network", NetworkArgs(settings=settings, zones=zones), opts=opts)

    pulumi.export("vpc_id", network.vpc_id)
    pulumi.export("public_subnet_ids", network.public_subnet_ids)
    pulumi.export("app_subnet_ids", network.app_subnet_ids)
    pulumi.export("data_subnet_ids", network.data_subnet_ids)
