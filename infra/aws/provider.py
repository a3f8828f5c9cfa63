"""The AWS provider of the platform stack, and the one change the real-engine check makes to it.

`nox -s engine` runs the dev stack through the real Pulumi CLI against a moto server on the
CI runner. It sets the stack config key ``billing-aws:localEndpoint`` to that server's loopback
URL; the provider then sends every AWS API the program uses there, with path-style S3 and no
instance-metadata lookup. The key is refused for anything but a loopback http:// URL, so no
configuration can send a real stack's calls elsewhere. (An explicit provider reads no ``aws:``
stack config, so the endpoints are set here:
https://www.pulumi.com/docs/iac/concepts/resources/providers/#explicit-provider-configuration.)
"""

from __future__ import annotations

from urllib.parse import urlparse

import pulumi
import pulumi_aws as aws

from infra.settings import EnvironmentSettings
from infra.tagging import tags

LOCAL_ENDPOINT_KEY = "localEndpoint"
# The services the platform program calls (infra/aws/*), by their provider endpoint names.
SERVICES = (
    "acm",
    "appautoscaling",
    "cloudfront",
    "cloudwatch",
    "cloudwatchlogs",
    "ec2",
    "ecr",
    "ecs",
    "elasticache",
    "elb",
    "elbv2",
    "iam",
    "kms",
    "rds",
    "route53",
    "s3",
    "secretsmanager",
    "servicediscovery",
    "sns",
    "sts",
    "wafv2",
)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


class LocalEndpointError(ValueError):
    """A local endpoint that is not a loopback http:// URL."""


def local_endpoint(value: str) -> str:
    """``value`` if it is an http:// URL on this machine's loopback with a port, else an error."""
    parsed = urlparse(value)
    if parsed.scheme != "http" or parsed.hostname not in LOOPBACK_HOSTS or parsed.port is None:
        raise LocalEndpointError(
            f"billing-aws:{LOCAL_ENDPOINT_KEY} {value!r} must be http://127.0.0.1:<port> "
            "(a moto server on this machine)"
        )
    return value.rstrip("/")


def provider_args(settings: EnvironmentSettings, endpoint: str | None = None) -> aws.ProviderArgs:
    """The provider for ``settings``; with ``endpoint``, every service at that local server."""
    assert settings.aws is not None  # noqa: S101 - the stack exists only where clouds lists aws
    args = aws.ProviderArgs(
        region=settings.aws.region,
        # The allowed-accounts guard: credentials for any other account fail before a change.
        allowed_account_ids=settings.aws.allowed_account_ids,
        default_tags=aws.ProviderDefaultTagsArgs(tags=tags(settings)),
    )
    if endpoint is None:
        return args
    url = local_endpoint(endpoint)
    args.endpoints = [aws.ProviderEndpointArgs(**dict.fromkeys(SERVICES, url))]
    args.s3_use_path_style = True  # bucket.127.0.0.1 does not resolve
    args.skip_metadata_api_check = True  # credentials come from the environment
    args.skip_region_validation = True
    return args


def configured_endpoint() -> str | None:
    """The stack's ``billing-aws:localEndpoint``, when the real-engine check set one."""
    return pulumi.Config().get(LOCAL_ENDPOINT_KEY)
