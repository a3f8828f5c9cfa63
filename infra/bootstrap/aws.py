"""AWS bootstrap: the Pulumi state bucket, the secrets key, GitHub's OIDC provider and two roles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import pulumi
import pulumi_aws as aws

from infra.bootstrap.github import (
    GITHUB_OIDC_HOST,
    GITHUB_OIDC_ISSUER,
    backend_bucket,
    kms_alias,
    preview_environment,
    subject,
)
from infra.settings import Cloud, EnvironmentSettings
from infra.tagging import tags

# The read-only role can read everything (to preview and check drift) and change nothing.
READ_ONLY_POLICY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
# The longest first deploy (production: Multi-AZ RDS, an ElastiCache replication group,
# CloudFront) runs past an hour: the deploy role's sessions last four hours, and the deploy job
# asks for them (role-duration-seconds) with a timeout inside them.
DEPLOY_SESSION_SECONDS = 4 * 3600
# The deploy role creates IAM roles, KMS keys and networks: only administrator access covers
# what the stack declares. Its trust policy, not its permissions, is what keeps it to CI.
DEPLOY_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"


@dataclass(frozen=True)
class AwsBootstrapArgs:
    settings: EnvironmentSettings


def trust_policy(provider_arn: str, repository: str, github_environment: str) -> str:
    """Only jobs of ``repository`` running in ``github_environment`` may assume the role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{GITHUB_OIDC_HOST}:aud": "sts.amazonaws.com",
                            f"{GITHUB_OIDC_HOST}:sub": subject(repository, github_environment),
                        }
                    },
                }
            ],
        },
        sort_keys=True,
    )


def state_policy(
    arns: list[str], actions: list[str], kms_actions: list[str], *, lock_writes: bool = False
) -> str:
    """Access to the state bucket (``arns[0]``) and the secrets key (``arns[1]``).

    ``lock_writes``: the lock files under .pulumi/locks/ (pkg/backend/diy/lock.go in
    github.com/pulumi/pulumi; pulumi/pulumi-aws#2201, and pulumi/docs#19948 lists Put and
    Delete among the backend's four actions), written into a bucket encrypted with the key.
    """
    bucket, key = arns
    statements = [
        {"Effect": "Allow", "Action": actions, "Resource": [bucket, f"{bucket}/*"]},
        {"Effect": "Allow", "Action": kms_actions, "Resource": key},
    ]
    if lock_writes:
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": f"{bucket}/.pulumi/locks/*",
            }
        )
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def drift_read_policy(region: str, account: str, environment: str) -> str:
    """What refreshing secret-bearing resources reads: secret values, decrypted by the service."""
    secrets = f"arn:aws:secretsmanager:{region}:{account}:secret:billing/{environment}/*"
    through = {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}}
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": secrets,
                },
                {
                    "Effect": "Allow",
                    "Action": ["kms:Decrypt"],
                    "Resource": "*",
                    "Condition": through,
                },
            ],
        },
        sort_keys=True,
    )


class AwsBootstrap(pulumi.ComponentResource):
    """State bucket, secrets key, GitHub OIDC provider, read-only and deploy roles."""

    state_bucket: pulumi.Output[str]
    secrets_key_arn: pulumi.Output[str]
    preview_role_arn: pulumi.Output[str]
    deploy_role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: AwsBootstrapArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:bootstrap:AwsBootstrap", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)
        labels = tags(settings)

        state = settings.pulumi.backend(Cloud.AWS)
        backend = backend_bucket(state.backend_url)
        bucket_name = (
            backend[1] if backend and backend[0] == "s3" else f"billing-{settings.name}-state"
        )
        bucket = aws.s3.Bucket(
            f"{name}-state",
            bucket=bucket_name,
            tags=labels,
            # protect: the bucket holds every stack's state; losing it orphans the environment.
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        aws.s3.BucketVersioning(
            f"{name}-state-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status="Enabled"
            ),
            opts=child,
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-state-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"Pulumi secrets of billing {settings.name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=labels,
            # protect: without the key no stack's secrets can be read again.
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        alias = kms_alias(state.secrets_provider)
        aws.kms.Alias(
            f"{name}-secrets-alias",
            name=f"alias/{alias or f'billing-pulumi-{settings.name}'}",
            target_key_id=key.key_id,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-state-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=key.arn
                    )
                )
            ],
            opts=child,
        )
        # ECS creates clusters and services as its service-linked role; in an account that never
        # used ECS it does not exist yet and the first CreateCluster fails with "Unable to assume
        # the service linked role" (aws-cloudformation/cloudformation-coverage-roadmap#818,
        # https://docs.aws.amazon.com/AmazonECS/latest/developerguide/using-service-linked-roles.html).
        # An account that already has it: `pulumi import` it (IAM allows one per account).
        aws.iam.ServiceLinkedRole(
            f"{name}-ecs-service-linked-role",
            aws_service_name="ecs.amazonaws.com",
            description="Amazon ECS manages the billing platform's clusters and services",
            opts=child,
        )
        oidc = aws.iam.OpenIdConnectProvider(
            f"{name}-github-oidc",
            url=GITHUB_OIDC_ISSUER,
            client_id_lists=["sts.amazonaws.com"],
            tags=labels,
            opts=child,
        )
        roles = {}
        for role, github_environment, policy in (
            ("preview", preview_environment(settings.name), READ_ONLY_POLICY),
            ("deploy", settings.name, DEPLOY_POLICY),
        ):
            created = aws.iam.Role(
                f"{name}-{role}-role",
                name=f"billing-{settings.name}-{role}",
                assume_role_policy=oidc.arn.apply(
                    partial(
                        trust_policy,
                        repository=settings.repository,
                        github_environment=github_environment,
                    )
                ),
                max_session_duration=DEPLOY_SESSION_SECONDS if role == "deploy" else 3600,
                tags=labels,
                opts=child,
            )
            aws.iam.RolePolicyAttachment(
                f"{name}-{role}-policy", role=created.name, policy_arn=policy, opts=child
            )
            roles[role] = created
        # Both roles read state and decrypt secrets; only the deploy role writes state, the
        # preview role writes lock files only (a data key for each object in the KMS bucket).
        for role, actions in (
            ("preview", ["s3:GetObject", "s3:ListBucket"]),
            ("deploy", ["s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:DeleteObject"]),
        ):
            kms_actions = ["kms:Decrypt", "kms:GenerateDataKey"]
            if role == "deploy":
                kms_actions += ["kms:Encrypt"]
            aws.iam.RolePolicy(
                f"{name}-{role}-state",
                role=roles[role].id,
                policy=pulumi.Output.all(bucket.arn, key.arn).apply(
                    partial(
                        state_policy,
                        actions=actions,
                        kms_actions=kms_actions,
                        lock_writes=role == "preview",
                    )
                ),
                opts=child,
            )
        # Drift refreshes secret versions: ReadOnlyAccess does not read secret values.
        assert settings.aws is not None  # noqa: S101 - rendered only where clouds lists aws
        aws.iam.RolePolicy(
            f"{name}-preview-drift-reads",
            role=roles["preview"].id,
            policy=drift_read_policy(settings.aws.region, settings.aws.account_id, settings.name),
            opts=child,
        )

        self.state_bucket = bucket.bucket
        self.secrets_key_arn = key.arn
        self.preview_role_arn = roles["preview"].arn
        self.deploy_role_arn = roles["deploy"].arn
        self.register_outputs(
            {
                "state_bucket": self.state_bucket,
                "secrets_key_arn": self.secrets_key_arn,
                "preview_role_arn": self.preview_role_arn,
                "deploy_role_arn": self.deploy_role_arn,
            }
        )
