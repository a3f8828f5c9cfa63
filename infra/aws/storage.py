"""AWS object storage: private, versioned, encrypted S3 buckets with lifecycle rules."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

with warnings.catch_warnings():
    # pulumi_aws.s3 warns while loading, about deprecated V2 classes this project never uses;
    # pulumi_aws loads a module on first attribute access, so touch one here.
    warnings.simplefilter("ignore", DeprecationWarning)
    _ = aws.s3.Bucket

from infra.settings import EnvironmentSettings
from infra.tagging import tags


@dataclass(frozen=True)
class PrivateBucketArgs:
    settings: EnvironmentSettings
    # Globally unique bucket name.
    bucket: str
    # KMS key for SSE-KMS; None means SSE-S3 (ALB access logs and CloudFront origins need it).
    kms_key_arn: pulumi.Input[str] | None = None
    # Days until current objects expire; None keeps them.
    expire_days: int | None = None
    # Days until current objects move to Glacier Instant Retrieval; None keeps them in Standard.
    archive_days: int | None = None
    noncurrent_days: int = 30
    service: str = "platform"
    # Keep the bucket if Pulumi ever deletes or replaces it: its objects are the data.
    retain: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)
    # Whether this component writes the bucket policy; a bucket has one policy, so a caller
    # that grants a service access writes it itself, starting from deny_insecure_transport().
    own_policy: bool = True


def deny_insecure_transport(bucket_arn: str) -> dict[str, Any]:
    """The bucket-policy statement that refuses every request not made over TLS."""
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


class PrivateBucket(pulumi.ComponentResource):
    """An S3 bucket nobody outside the account can read, versioned, encrypted and expiring."""

    bucket_id: pulumi.Output[str]
    bucket_name: pulumi.Output[str]
    arn: pulumi.Output[str]
    regional_domain_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: PrivateBucketArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:aws:PrivateBucket", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            aws.s3.BucketArgs(
                bucket=args.bucket,
                force_destroy=not settings.is_production,
                tags=tags(settings, args.service, **args.extra_tags),
            ),
            # protect: deleting the bucket deletes every object in it. retain_on_delete: a
            # rename (a replacement) must not take the old bucket's objects with it.
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=settings.is_production,
                retain_on_delete=args.retain and settings.is_production,
            ),
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            aws.s3.BucketPublicAccessBlockArgs(
                bucket=bucket.id,
                block_public_acls=True,
                block_public_policy=True,
                ignore_public_acls=True,
                restrict_public_buckets=True,
            ),
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            aws.s3.BucketOwnershipControlsArgs(
                bucket=bucket.id,
                rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            ),
            opts=child,
        )
        aws.s3.BucketVersioning(
            f"{name}-versioning",
            aws.s3.BucketVersioningInitArgs(
                bucket=bucket.id,
                versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                    status="Enabled"
                ),
            ),
            opts=child,
        )
        by_default = (
            aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs
        )
        sse = by_default(
            sse_algorithm="aws:kms" if args.kms_key_arn is not None else "AES256",
            kms_master_key_id=args.kms_key_arn,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            aws.s3.BucketServerSideEncryptionConfigurationInitArgs(
                bucket=bucket.id,
                rules=[
                    aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                        apply_server_side_encryption_by_default=sse,
                        # S3 Bucket Keys cut KMS requests (and cost) by orders of magnitude.
                        bucket_key_enabled=args.kms_key_arn is not None,
                    )
                ],
            ),
            opts=child,
        )
        transitions = (
            [
                aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(
                    days=args.archive_days, storage_class="GLACIER_IR"
                )
            ]
            if args.archive_days is not None
            else None
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            aws.s3.BucketLifecycleConfigurationArgs(
                bucket=bucket.id,
                rules=[
                    aws.s3.BucketLifecycleConfigurationRuleArgs(
                        id="retention",
                        status="Enabled",
                        filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                        transitions=transitions,
                        expiration=(
                            aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                                days=args.expire_days
                            )
                            if args.expire_days is not None
                            else None
                        ),
                        noncurrent_version_expiration=(
                            aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                                noncurrent_days=args.noncurrent_days
                            )
                        ),
                        abort_incomplete_multipart_upload=(
                            aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                                days_after_initiation=7
                            )
                        ),
                    )
                ],
            ),
            opts=child,
        )

        if args.own_policy:
            aws.s3.BucketPolicy(
                f"{name}-policy",
                aws.s3.BucketPolicyArgs(
                    bucket=bucket.id,
                    policy=bucket.arn.apply(
                        lambda arn: json.dumps(
                            {
                                "Version": "2012-10-17",
                                "Statement": [deny_insecure_transport(arn)],
                            }
                        )
                    ),
                ),
                opts=child,
            )

        self.bucket_id = bucket.id
        self.bucket_name = bucket.bucket
        self.arn = bucket.arn
        self.regional_domain_name = bucket.bucket_regional_domain_name
        self.register_outputs(
            {
                "bucket_id": self.bucket_id,
                "bucket_name": self.bucket_name,
                "arn": self.arn,
                "regional_domain_name": self.regional_domain_name,
            }
        )
