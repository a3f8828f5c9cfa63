"""AWS security: KMS keys, least-privilege security groups, and Secrets Manager secrets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.manifests import SecretName, ServiceManifest
from infra.settings import EnvironmentSettings
from infra.tagging import tags

POSTGRES_PORT = 5432
REDIS_PORT = 6379
HTTPS_PORT = 443
HTTP_PORT = 80
ANYWHERE = "0.0.0.0/0"
# The fields of the database-credentials secret; DATABASE_PASSWORD reads the "password" key.
DATABASE_SECRET_KEY = "password"  # noqa: S105 - a JSON key name, not a password


def _aws(settings: EnvironmentSettings) -> tuple[str, str]:
    assert settings.aws is not None  # noqa: S101 - AWS components run only for AWS stacks
    return settings.aws.region, settings.aws.account_id


def _key_policy(account: str, services: list[dict[str, Any]]) -> str:
    statements: list[dict[str, Any]] = [
        {
            # The account's IAM policies decide who else may use the key.
            "Sid": "AccountAdministers",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    statements.extend(services)
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


@dataclass(frozen=True)
class KeysArgs:
    settings: EnvironmentSettings


class Keys(pulumi.ComponentResource):
    """Customer-managed KMS keys: one for data at rest, one for logs and notifications."""

    data_key_arn: pulumi.Output[str]
    logs_key_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: KeysArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:Keys", name, None, opts)
        settings = args.settings
        region, account = _aws(settings)
        log_service = {
            # CloudWatch Logs encrypts this account's log groups, and nothing else's.
            "Sid": "CloudWatchLogsEncrypts",
            "Effect": "Allow",
            "Principal": {"Service": f"logs.{region}.amazonaws.com"},
            "Action": [
                "kms:Encrypt*",
                "kms:Decrypt*",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:Describe*",
            ],
            "Resource": "*",
            "Condition": {
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": (
                        f"arn:aws:logs:{region}:{account}:log-group:*"
                    )
                }
            },
        }
        alarm_service = {
            # CloudWatch alarms and EventBridge rules publish to the encrypted SNS topics.
            "Sid": "AlarmsAndEventsPublish",
            "Effect": "Allow",
            "Principal": {"Service": ["cloudwatch.amazonaws.com", "events.amazonaws.com"]},
            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
            "Resource": "*",
        }
        purposes = {
            "data": ("database, cache, secrets, backups and images", []),
            "logs": ("log groups and alarm topics", [log_service, alarm_service]),
        }
        arns: dict[str, pulumi.Output[str]] = {}
        for purpose, (description, services) in purposes.items():
            key = aws.kms.Key(
                f"{name}-{purpose}",
                aws.kms.KeyArgs(
                    description=f"billing {settings.name}: {description}",
                    enable_key_rotation=True,
                    rotation_period_in_days=365,
                    # The longest wait: a key scheduled for deletion by mistake can be rescued.
                    deletion_window_in_days=30,
                    policy=_key_policy(account, services),
                    tags=tags(settings),
                ),
                # protect, retain_on_delete: without the key, everything encrypted with it is
                # unreadable; a replacement must never schedule the old key for deletion.
                opts=pulumi.ResourceOptions(
                    parent=self,
                    protect=settings.is_production,
                    retain_on_delete=settings.is_production,
                ),
            )
            aws.kms.Alias(
                f"{name}-{purpose}-alias",
                aws.kms.AliasArgs(
                    name=f"alias/billing-{settings.name}-{purpose}", target_key_id=key.key_id
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            arns[purpose] = key.arn

        self.data_key_arn = arns["data"]
        self.logs_key_arn = arns["logs"]
        self.register_outputs(
            {"data_key_arn": self.data_key_arn, "logs_key_arn": self.logs_key_arn}
        )


@dataclass(frozen=True)
class SecurityGroupsArgs:
    settings: EnvironmentSettings
    vpc_id: pulumi.Input[str]
    # Subnet ranges the groups' egress rules name (no group references, so no cycles).
    app_cidrs: list[str]
    data_cidrs: list[str]
    services: dict[str, ServiceManifest]


class SecurityGroups(pulumi.ComponentResource):
    """Security groups: internet to ALB, ALB to services, services to the data stores."""

    alb_id: pulumi.Output[str]
    service_ids: dict[str, pulumi.Output[str]]
    database_id: pulumi.Output[str]
    cache_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: SecurityGroupsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:SecurityGroups", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        public_ports = sorted({m.port for m in args.services.values() if m.public and m.port})

        def group(
            role: str, description: str, service: str = "platform", **rules: Any
        ) -> aws.ec2.SecurityGroup:
            return aws.ec2.SecurityGroup(
                f"{name}-{role}",
                aws.ec2.SecurityGroupArgs(
                    # A prefix, not a name: a replacement is created before the old group goes.
                    name_prefix=f"billing-{settings.name}-{role}-",
                    description=description,
                    vpc_id=args.vpc_id,
                    tags=tags(settings, service, Name=f"billing-{settings.name}-{role}"),
                    **rules,
                ),
                opts=child,
            )

        alb = group(
            "alb",
            "Load balancer: HTTPS from the internet, HTTP only to redirect",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    description="HTTPS from the internet",
                    protocol="tcp",
                    from_port=HTTPS_PORT,
                    to_port=HTTPS_PORT,
                    cidr_blocks=[ANYWHERE],
                ),
                aws.ec2.SecurityGroupIngressArgs(
                    description="HTTP from the internet, answered with a redirect to HTTPS",
                    protocol="tcp",
                    from_port=HTTP_PORT,
                    to_port=HTTP_PORT,
                    cidr_blocks=[ANYWHERE],
                ),
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    description=f"To the services' port {port} in the app subnets",
                    protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_blocks=args.app_cidrs,
                )
                for port in public_ports
            ],
        )
        service_egress = [
            aws.ec2.SecurityGroupEgressArgs(
                description="HTTPS to AWS APIs (endpoints) and the payment provider",
                protocol="tcp",
                from_port=HTTPS_PORT,
                to_port=HTTPS_PORT,
                cidr_blocks=[ANYWHERE],
            ),
            aws.ec2.SecurityGroupEgressArgs(
                description="PostgreSQL in the data subnets",
                protocol="tcp",
                from_port=POSTGRES_PORT,
                to_port=POSTGRES_PORT,
                cidr_blocks=args.data_cidrs,
            ),
            aws.ec2.SecurityGroupEgressArgs(
                description="Redis in the data subnets",
                protocol="tcp",
                from_port=REDIS_PORT,
                to_port=REDIS_PORT,
                cidr_blocks=args.data_cidrs,
            ),
        ]
        services: dict[str, aws.ec2.SecurityGroup] = {}
        for service, manifest in sorted(args.services.items()):
            ingress = (
                [
                    aws.ec2.SecurityGroupIngressArgs(
                        description="From the load balancer only",
                        protocol="tcp",
                        from_port=manifest.port,
                        to_port=manifest.port,
                        security_groups=[alb.id],
                    )
                ]
                if manifest.public and manifest.port is not None
                else []
            )
            services[service] = group(
                f"service-{service}",
                f"{service} tasks",
                service,
                ingress=ingress,
                egress=service_egress,
            )
        service_ids = [g.id for g in services.values()]
        # No egress rules: the data stores answer, they never initiate.
        database = group(
            "database",
            "PostgreSQL: only from the services",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    description="PostgreSQL from the services",
                    protocol="tcp",
                    from_port=POSTGRES_PORT,
                    to_port=POSTGRES_PORT,
                    security_groups=service_ids,
                )
            ],
            egress=[],
        )
        cache = group(
            "cache",
            "Redis: only from the services",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    description="Redis from the services",
                    protocol="tcp",
                    from_port=REDIS_PORT,
                    to_port=REDIS_PORT,
                    security_groups=service_ids,
                )
            ],
            egress=[],
        )

        self.alb_id = alb.id
        self.service_ids = {service: g.id for service, g in services.items()}
        self.database_id = database.id
        self.cache_id = cache.id
        self.register_outputs(
            {
                "alb_id": self.alb_id,
                "service_ids": self.service_ids,
                "database_id": self.database_id,
                "cache_id": self.cache_id,
            }
        )


@dataclass(frozen=True)
class SecretsArgs:
    settings: EnvironmentSettings
    kms_key_arn: pulumi.Input[str]


# Secrets whose values an operator sets (aws secretsmanager put-secret-value) after the first up.
OPERATOR_SECRETS = (SecretName.STRIPE_API_KEY, SecretName.STRIPE_WEBHOOK_SECRET)
# Placeholder that lets tasks start before the operator sets the real value.
PLACEHOLDER = "set-me"


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
                    recovery_window_in_days=30 if production else 7,
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
