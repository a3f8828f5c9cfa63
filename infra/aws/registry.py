"""AWS images: an ECR pull-through cache of the build registry, in the environment's account.

See infra/images.py for the registry model. The cache rule needs the build registry's
credentials in a Secrets Manager secret named ``ecr-pullthroughcache/...``
(https://docs.aws.amazon.com/AmazonECR/latest/userguide/pull-through-cache-creating-secret.html):
the stack creates it with a placeholder, an operator puts a read-only token in it once, and
later updates leave the value alone (as the Stripe secrets do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.secrets import recovery_window_days
from infra.images import ECR_UPSTREAMS, ImageRef, ecr_image, ecr_prefix
from infra.settings import ENVIRONMENTS_DIR, PINS_FILE, EnvironmentSettings, SettingsError
from infra.tagging import tags

# Cached layers nobody pulled for this long are expired; pinned digests are pulled on every start.
UNTAGGED_DAYS = 14
KEPT_IMAGES = 30
# The credential placeholder: the cache answers 401 until an operator sets a real token.
PLACEHOLDER_CREDENTIALS = json.dumps({"username": "set-me", "accessToken": "set-me"})


def upstream_of(settings: EnvironmentSettings) -> str:
    """The one build registry every pinned image comes from; ECR must support caching it."""
    pins = ENVIRONMENTS_DIR / settings.name / PINS_FILE
    hosts = {s: ImageRef.parse(ref).registry for s, ref in sorted(settings.pins.images.items())}
    first = next(iter(hosts.values()))
    for service, host in hosts.items():
        if host != first:
            message = f"registry '{host}' differs from '{first}': one build registry"
            raise SettingsError(pins, f"images.{service}", message)
        if host not in ECR_UPSTREAMS:
            raise SettingsError(
                pins, f"images.{service}", f"ECR cannot cache '{host}' ({sorted(ECR_UPSTREAMS)})"
            )
    return first


def lifecycle_policy() -> str:
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"Expire untagged layers after {UNTAGGED_DAYS} days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": UNTAGGED_DAYS,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"Keep the newest {KEPT_IMAGES} images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": KEPT_IMAGES,
                    },
                    "action": {"type": "expire"},
                },
            ]
        }
    )


@dataclass(frozen=True)
class RegistryArgs:
    settings: EnvironmentSettings
    kms_key_arn: pulumi.Input[str]


class Registry(pulumi.ComponentResource):
    """The pull-through cache rule, its credential secret and the template of cached repos."""

    images: dict[str, str]
    repository_prefix: str
    cache_rule: aws.ecr.PullThroughCacheRule

    def __init__(
        self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Registry", name, None, opts)
        settings = args.settings
        assert settings.aws is not None  # noqa: S101 - AWS components run only for AWS stacks
        upstream = upstream_of(settings)
        url, needs_credentials = ECR_UPSTREAMS[upstream]
        prefix = ecr_prefix(settings.name)
        child = pulumi.ResourceOptions(parent=self)

        credential_arn: pulumi.Output[str] | None = None
        if needs_credentials:
            secret = aws.secretsmanager.Secret(
                f"{name}-upstream-credentials",
                aws.secretsmanager.SecretArgs(
                    # ECR reads only secrets under this prefix, in its own account and region.
                    name=f"ecr-pullthroughcache/{prefix}",
                    description=f"billing {settings.name}: read-only token for {upstream}",
                    kms_key_id=args.kms_key_arn,
                    recovery_window_in_days=recovery_window_days(settings.tier),
                    tags=tags(settings),
                ),
                # protect: the cache cannot refresh an image without it.
                opts=pulumi.ResourceOptions(parent=self, protect=settings.is_production),
            )
            aws.secretsmanager.SecretVersion(
                f"{name}-upstream-credentials-version",
                aws.secretsmanager.SecretVersionArgs(
                    secret_id=secret.id, secret_string=pulumi.Output.secret(PLACEHOLDER_CREDENTIALS)
                ),
                # The operator's token survives every later up.
                opts=pulumi.ResourceOptions(
                    parent=self, protect=settings.is_production, ignore_changes=["secretString"]
                ),
            )
            credential_arn = secret.arn
        self.cache_rule = aws.ecr.PullThroughCacheRule(
            f"{name}-cache",
            aws.ecr.PullThroughCacheRuleArgs(
                ecr_repository_prefix=prefix,
                upstream_registry_url=url,
                credential_arn=credential_arn,
            ),
            opts=child,
        )
        # Repositories the cache creates on a first pull get these settings (AES256: a customer
        # key here needs a custom role for ECR, and the images are the build's, not customer data).
        aws.ecr.RepositoryCreationTemplate(
            f"{name}-template",
            aws.ecr.RepositoryCreationTemplateArgs(
                prefix=prefix,
                applied_fors=["PULL_THROUGH_CACHE"],
                description=f"billing {settings.name}: cached service images",
                image_tag_mutability="MUTABLE",
                encryption_configurations=[
                    aws.ecr.RepositoryCreationTemplateEncryptionConfigurationArgs(
                        encryption_type="AES256"
                    )
                ],
                lifecycle_policy=lifecycle_policy(),
            ),
            opts=child,
        )
        self.repository_prefix = prefix
        self.images = {
            service: ecr_image(settings.aws.account_id, settings.aws.region, settings.name, ref)
            for service, ref in sorted(settings.pins.images.items())
        }
        self.register_outputs({"images": self.images, "repository_prefix": prefix})
