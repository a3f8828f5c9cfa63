"""AWS secrets: Secrets Manager secrets encrypted with the data key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.manifests import SecretName
from infra.settings import EnvironmentSettings, Tier
from infra.tagging import tags

# The fields of the database-credentials secret; DATABASE_PASSWORD reads the "password" key.
DATABASE_SECRET_KEY = "password"  # noqa: S105 - a JSON key name, not a password


@dataclass(frozen=True)
class SecretsArgs:
    settings: EnvironmentSettings
    kms_key_arn: pulumi.Input[str]


# Secrets whose values an operator sets (aws secretsmanager put-secret-value) after the first up.
OPERATOR_SECRETS = (SecretName.STRIPE_API_KEY, SecretName.STRIPE_WEBHOOK_SECRET)
# Placeholder that lets tasks start before the operator sets the real value.
PLACEHOLDER = "set-me"


def recovery_window_days(tier: Tier) -> int:
    """Secrets Manager's recovery window by tier: 0 (delete at once) or 7-30 days."""
    return {Tier.PRODUCTION: 30, Tier.STAGING: 7}.get(tier, 0)


class Secrets(pulumi.ComponentResource):
    """Secrets Manager secrets, each encrypted with the data key; generated values stay secret."""

    arns: dict[SecretName, pulumi.Output[str]]
    database_password: pulumi.Output[str]
    redis_auth_token: pulumi.Output[str]

    def __init__(
        self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Secrets", name, None, opts)
        settings = args.settings
        production = settings.is_production

        def password(role: str, length: int, **extra: Any) -> pulumi.Output[str]:
            generated = random.RandomPassword(
                f"{name}-{role}-value",
                random.RandomPasswordArgs(length=length, **extra),
                # protect: a new value locks every client out of the data it guards.
                opts=pulumi.ResourceOptions(parent=self, protect=production),
            )
            return pulumi.Output.secret(generated.result)

        self.database_password = password(
            # RDS refuses '/', '@', '"' and spaces in a master password.
            "database-password",
            40,
            special=True,
            override_special="!#$%^&*()-_=+[]{}<>:?",
        )
        # ElastiCache auth tokens: 16-128 printable characters, no '@', '"' or '/'.
        self.redis_auth_token = password("redis-auth-token", 64, special=False)
        generated: dict[SecretName, pulumi.Output[str] | None] = {
            SecretName.DATABASE_PASSWORD: None,  # written by the database, with its endpoint
            SecretName.REDIS_AUTH_TOKEN: self.redis_auth_token,
            SecretName.JWT_SECRET: password("jwt-secret", 64, special=False),
            SecretName.STRIPE_API_KEY: None,
            SecretName.STRIPE_WEBHOOK_SECRET: None,
        }
        self.arns = {}
        for secret_name in SecretName:
            secret = aws.secretsmanager.Secret(
                f"{name}-{secret_name.value}",
                aws.secretsmanager.SecretArgs(
                    name=f"billing/{settings.name}/{secret_name.value}",
                    description=f"billing {settings.name}: {secret_name.value}",
                    kms_key_id=args.kms_key_arn,
                    # The longest recovery window in production: a deleted secret comes back.
                    # Dev deletes at once: a secret in its recovery window keeps its name, and
                    # CreateSecret then fails with "already scheduled for deletion" when dev is
                    # created again (hashicorp/terraform-provider-aws#10259).
                    recovery_window_in_days=recovery_window_days(settings.tier),
                    tags=tags(settings),
                ),
                # protect: deleting a secret strands the data it unlocks.
                opts=pulumi.ResourceOptions(parent=self, protect=production),
            )
            self.arns[secret_name] = secret.arn
            value = generated[secret_name]
            if value is not None:
                aws.secretsmanager.SecretVersion(
                    f"{name}-{secret_name.value}-version",
                    aws.secretsmanager.SecretVersionArgs(secret_id=secret.id, secret_string=value),
                    opts=pulumi.ResourceOptions(parent=self, protect=production),
                )
            elif secret_name in OPERATOR_SECRETS:
                aws.secretsmanager.SecretVersion(
                    f"{name}-{secret_name.value}-version",
                    aws.secretsmanager.SecretVersionArgs(
                        secret_id=secret.id, secret_string=pulumi.Output.secret(PLACEHOLDER)
                    ),
                    # The operator's value must survive every later up.
                    opts=pulumi.ResourceOptions(
                        parent=self, protect=production, ignore_changes=["secretString"]
                    ),
                )
        self.register_outputs(
            {
                "arns": self.arns,
                "database_password": self.database_password,
                "redis_auth_token": self.redis_auth_token,
            }
        )
