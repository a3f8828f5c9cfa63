"""Cloud KMS: a key ring and a rotating key per data store, usable by that store's agent only."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time as time

from infra.settings import EnvironmentSettings
from infra.tagging import labels

# How long a new key grant takes to reach every service: "typically within 2 minutes", up to
# 7 (https://cloud.google.com/iam/docs/access-change-propagation). A CMEK resource created
# before its agent's grant propagated fails ("Unable to delegate the access of CMEK",
# hashicorp/terraform-provider-google#17333), so they wait.
GRANT_PROPAGATION = "120s"
# 90 days, the longest rotation period the platform allows (seconds, as the API takes it).
ROTATION_PERIOD = f"{90 * 24 * 60 * 60}s"


class KeyPurpose(StrEnum):
    """What a key encrypts; each names the service agent that uses it."""

    DATABASE = "database"
    SECRETS = "secrets"
    REGISTRY = "registry"


# The Google service whose agent encrypts with each key (CMEK).
SERVICE_AGENTS = {
    KeyPurpose.DATABASE: "sqladmin.googleapis.com",
    KeyPurpose.SECRETS: "secretmanager.googleapis.com",
    KeyPurpose.REGISTRY: "artifactregistry.googleapis.com",
}


@dataclass(frozen=True)
class EncryptionArgs:
    settings: EnvironmentSettings


class Encryption(pulumi.ComponentResource):
    """A regional key ring with a key per purpose, each granted to its service agent only."""

    key_ring_id: pulumi.Output[str]
    key_ids: dict[KeyPurpose, pulumi.Output[str]]
    # The agents' key grants and the wait for their propagation: CMEK resources depend on these.
    grants: list[pulumi.Resource]

    def __init__(
        self, name: str, args: EncryptionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Encryption", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        # protect: a key ring cannot be deleted, and a destroyed key makes every copy of the
        # data it encrypted (database, backups, secrets) unreadable.
        stateful = pulumi.ResourceOptions(parent=self, protect=settings.is_production)
        child = pulumi.ResourceOptions(parent=self)

        # CMEK keys must live in the same region as the data they encrypt.
        key_ring = gcp.kms.KeyRing(
            f"{name}-key-ring",
            gcp.kms.KeyRingArgs(name=f"billing-{settings.name}", location=settings.gcp.region),
            opts=stateful,
        )
        self.key_ids = {}
        self.grants = []
        for purpose in KeyPurpose:
            key = gcp.kms.CryptoKey(
                f"{name}-{purpose}",
                gcp.kms.CryptoKeyArgs(
                    name=f"billing-{settings.name}-{purpose}",
                    key_ring=key_ring.id,
                    purpose="ENCRYPT_DECRYPT",
                    rotation_period=ROTATION_PERIOD,
                    version_template=gcp.kms.CryptoKeyVersionTemplateArgs(
                        algorithm="GOOGLE_SYMMETRIC_ENCRYPTION",
                        protection_level="HSM" if settings.is_production else "SOFTWARE",
                    ),
                    labels=labels(settings),
                ),
                opts=stateful,
            )
            agent = gcp.projects.ServiceIdentity(
                f"{name}-{purpose}-agent",
                gcp.projects.ServiceIdentityArgs(
                    project=settings.gcp.project, service=SERVICE_AGENTS[purpose]
                ),
                opts=child,
            )
            grant = gcp.kms.CryptoKeyIAMMember(
                f"{name}-{purpose}-agent-grant",
                gcp.kms.CryptoKeyIAMMemberArgs(
                    crypto_key_id=key.id,
                    role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
                    member=agent.member,
                ),
                opts=child,
            )
            self.key_ids[purpose] = key.id
            self.grants.append(grant)
        # Everything that encrypts with a key depends on this wait, which depends on the grants.
        propagated = time.Sleep(
            f"{name}-grants-propagated",
            time.SleepArgs(create_duration=GRANT_PROPAGATION),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.grants)),
        )
        self.grants.append(propagated)

        self.key_ring_id = key_ring.id
        self.register_outputs(
            {
                "key_ring_id": self.key_ring_id,
                **{f"{purpose}_key_id": key_id for purpose, key_id in self.key_ids.items()},
            }
        )
