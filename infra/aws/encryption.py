"""AWS encryption keys: customer-managed KMS keys for data at rest, logs and notifications."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.settings import EnvironmentSettings
from infra.tagging import tags


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
        cache_credentials = {
            # ECR's pull-through cache reads its upstream credentials through Secrets Manager
            # as its service-linked role, which exists only after the first cache rule: so the
            # grant names the secrets (by encryption context) instead of the role, as the
            # aws/secretsmanager key's own policy does.
            "Sid": "EcrCacheReadsItsCredentials",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": ["kms:Decrypt", "kms:DescribeKey"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "kms:CallerAccount": account,
                    "kms:ViaService": f"secretsmanager.{region}.amazonaws.com",
                },
                "StringLike": {
                    "kms:EncryptionContext:SecretARN": (
                        f"arn:aws:secretsmanager:{region}:{account}:secret:ecr-pullthroughcache/*"
                    )
                },
            },
        }
        purposes = {
            "data": ("database, cache, secrets, backups and images", [cache_credentials]),
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
