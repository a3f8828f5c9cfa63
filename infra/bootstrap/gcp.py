"""GCP bootstrap: workload identity federation for GitHub, read-only and deploy service accounts.

The GCP stacks' state bucket (gs://) and secrets key (gcpkms://) are created here, in the
environment's project, as environments/<env>/settings.toml [pulumi.gcp] names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pulumi
import pulumi_gcp as gcp

from infra.bootstrap.github import (
    GITHUB_OIDC_ISSUER,
    backend_bucket,
    gcp_kms_key,
    preview_environment,
)
from infra.settings import Cloud, EnvironmentSettings
from infra.tagging import labels

# Viewer reads everything (preview, drift). The deploy account holds the admin role of each
# service the stack manages, not roles/editor: editor cannot set IAM policies, and the stack
# sets them on keys (cloudkms.admin), secrets (secretmanager.admin), Cloud Run workloads
# (run.admin) and the registry (artifactregistry.admin)
# (https://cloud.google.com/iam/docs/understanding-roles#basic).
ROLES = {
    # secretAccessor: drift refreshes secret versions, which reads their values
    # (secretmanager.versions.access).
    "preview": ["roles/viewer", "roles/iam.securityReviewer", "roles/secretmanager.secretAccessor"],
    "deploy": [
        "roles/artifactregistry.admin",
        "roles/cloudkms.admin",
        "roles/cloudsql.admin",
        "roles/compute.admin",
        "roles/dns.admin",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.serviceAccountUser",
        "roles/monitoring.editor",
        "roles/redis.admin",
        "roles/resourcemanager.projectIamAdmin",
        "roles/run.admin",
        "roles/secretmanager.admin",
        "roles/servicenetworking.networksAdmin",
        "roles/serviceusage.serviceUsageAdmin",
        "roles/vpcaccess.admin",
    ],
}


@dataclass(frozen=True)
class GcpBootstrapArgs:
    settings: EnvironmentSettings


def attribute_condition(repository: str) -> str:
    """Only tokens from ``repository`` are exchanged at all."""
    return f"assertion.repository == '{repository}'"


def principal_set(pool_name: str, github_environment: str) -> str:
    """Every token of the pool whose GitHub environment is ``github_environment``."""
    return (
        f"principalSet://iam.googleapis.com/{pool_name}/attribute.environment/{github_environment}"
    )


# State and secrets: the preview account reads state, writes only lock files (under
# .pulumi/locks/, pkg/backend/diy/lock.go in github.com/pulumi/pulumi) and decrypts; the deploy
# account writes state and encrypts. Project roles (viewer, editor) grant neither object reads
# nor Cloud KMS encryption.
STATE_ROLES = {"preview": "roles/storage.objectViewer", "deploy": "roles/storage.objectAdmin"}
KEY_ROLES = {
    "preview": "roles/cloudkms.cryptoKeyDecrypter",
    "deploy": "roles/cloudkms.cryptoKeyEncrypterDecrypter",
}


def lock_condition(bucket_name: str) -> str:
    """IAM condition: objects under the bucket's .pulumi/locks/ prefix only."""
    return f'resource.name.startsWith("projects/_/buckets/{bucket_name}/objects/.pulumi/locks/")'


def state_access(
    name: str,
    role: str,
    account: gcp.serviceaccount.Account,
    bucket: gcp.storage.Bucket,
    key: gcp.kms.CryptoKey,
    opts: pulumi.ResourceOptions,
) -> None:
    """``account``'s access to the state bucket and the secrets key, as ``role`` needs."""
    member = account.email.apply(lambda email: f"serviceAccount:{email}")
    gcp.storage.BucketIAMMember(
        f"{name}-state", bucket=bucket.name, role=STATE_ROLES[role], member=member, opts=opts
    )
    if role == "preview":
        gcp.storage.BucketIAMMember(
            f"{name}-state-locks",
            bucket=bucket.name,
            role="roles/storage.objectUser",
            member=member,
            condition=gcp.storage.BucketIAMMemberConditionArgs(
                title="pulumi-locks", expression=bucket.name.apply(lock_condition)
            ),
            opts=opts,
        )
    gcp.kms.CryptoKeyIAMMember(
        f"{name}-secrets-key", crypto_key_id=key.id, role=KEY_ROLES[role], member=member, opts=opts
    )


class GcpBootstrap(pulumi.ComponentResource):
    """Workload identity pool and GitHub provider, preview and deploy service accounts."""

    pool_name: pulumi.Output[str]
    provider_name: pulumi.Output[str]
    preview_service_account: pulumi.Output[str]
    deploy_service_account: pulumi.Output[str]

    def __init__(
        self, name: str, args: GcpBootstrapArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:bootstrap:GcpBootstrap", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - rendered only where clouds lists gcp
        project = settings.gcp.project
        child = pulumi.ResourceOptions(parent=self)

        state = settings.pulumi.backend(Cloud.GCP)
        backend = backend_bucket(state.backend_url)
        bucket = key = None
        if backend and backend[0] == "gs":
            bucket = gcp.storage.Bucket(
                f"{name}-state",
                name=backend[1],
                project=project,
                location=settings.gcp.region.upper(),
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                versioning=gcp.storage.BucketVersioningArgs(enabled=True),
                labels=labels(settings),
                # protect: the bucket holds every stack's state.
                opts=pulumi.ResourceOptions(parent=self, protect=True),
            )
        kms = gcp_kms_key(state.secrets_provider)
        if kms:
            location, ring_name, key_name = kms
            ring = gcp.kms.KeyRing(
                f"{name}-secrets-ring",
                name=ring_name,
                project=project,
                location=location,
                opts=child,
            )
            key = gcp.kms.CryptoKey(
                f"{name}-secrets-key",
                name=key_name,
                key_ring=ring.id,
                rotation_period="7776000s",
                # protect: without the key no stack's secrets can be read again.
                opts=pulumi.ResourceOptions(parent=self, protect=True),
            )

        pool = gcp.iam.WorkloadIdentityPool(
            f"{name}-github-pool",
            workload_identity_pool_id=f"github-{settings.name}",
            project=project,
            display_name=f"GitHub Actions ({settings.name})",
            opts=child,
        )
        provider = gcp.iam.WorkloadIdentityPoolProvider(
            f"{name}-github-provider",
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="github",
            project=project,
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.repository": "assertion.repository",
                "attribute.environment": "assertion.environment",
            },
            attribute_condition=attribute_condition(settings.repository),
            oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=GITHUB_OIDC_ISSUER),
            opts=child,
        )
        accounts = {}
        for role, environment in (
            ("preview", preview_environment(settings.name)),
            ("deploy", settings.name),
        ):
            account = gcp.serviceaccount.Account(
                f"{name}-{role}-account",
                account_id=f"billing-{settings.name}-{role}"[:30],
                project=project,
                display_name=f"GitHub Actions {role} ({settings.name})",
                opts=child,
            )
            # Only jobs running in this GitHub environment (the pool admits one repository) may
            # act as the account.
            gcp.serviceaccount.IAMMember(
                f"{name}-{role}-federation",
                service_account_id=account.name,
                role="roles/iam.workloadIdentityUser",
                member=pool.name.apply(partial(principal_set, github_environment=environment)),
                opts=child,
            )
            for granted in ROLES[role]:
                gcp.projects.IAMMember(
                    f"{name}-{role}-{granted.split('/')[-1].replace('.', '-')}",
                    project=project,
                    role=granted,
                    member=account.email.apply(lambda email: f"serviceAccount:{email}"),
                    opts=child,
                )
            accounts[role] = account
            if bucket is not None and key is not None:
                state_access(f"{name}-{role}", role, account, bucket, key, child)

        self.pool_name = pool.name
        self.provider_name = provider.name
        self.preview_service_account = accounts["preview"].email
        self.deploy_service_account = accounts["deploy"].email
        self.register_outputs(
            {
                "pool_name": self.pool_name,
                "provider_name": self.provider_name,
                "preview_service_account": self.preview_service_account,
                "deploy_service_account": self.deploy_service_account,
            }
        )
