"""Secret Manager: one CMEK-encrypted secret per platform secret, with the values the stack owns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from infra.manifests import SecretName
from infra.settings import EnvironmentSettings
from infra.tagging import labels

# Set by an operator (`gcloud secrets versions add`), never by the stack: the values come
# from Stripe's dashboard and must not pass through Pulumi state. The stack writes a placeholder
# first version so that "latest" exists when a workload that reads it is created: a Cloud Run
# revision whose secret has no version fails to deploy (hashicorp/terraform-provider-google#10846);
# the operator's versions are never overwritten (ignore_changes), as on AWS.
OPERATOR_SECRETS = frozenset({SecretName.STRIPE_API_KEY, SecretName.STRIPE_WEBHOOK_SECRET})
PLACEHOLDER = "set-me"
# The Memorystore server CA the services verify TLS against (not a SecretName: the platform,
# not a service manifest, decides it exists; it is mounted as a file).
REDIS_CA = "redis-server-ca"


@dataclass(frozen=True)
class SecretsArgs:
    settings: EnvironmentSettings
    kms_key_id: pulumi.Input[str]
    redis_auth_string: pulumi.Input[str]
    # The instance's server CA certificate(s), PEM.
    redis_server_ca: pulumi.Input[str]
    # The key grant to Secret Manager's agent: without it, creating a CMEK secret fails.
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


class Secrets(pulumi.ComponentResource):
    """Every SecretName as a secret; generated passwords and the Redis AUTH string as versions."""

    secret_ids: dict[SecretName, pulumi.Output[str]]
    redis_ca_id: pulumi.Output[str]
    versions: list[pulumi.Resource]
    database_password: pulumi.Output[str]

    def __init__(
        self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Secrets", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        child = pulumi.ResourceOptions(parent=self)
        self._production = settings.is_production

        # Generated here so the values exist only as secrets in state, never in a file.
        database_password = random.RandomPassword(
            f"{name}-database-password",
            random.RandomPasswordArgs(length=32, special=True, override_special="-_.~"),
            opts=child,
        )
        jwt_secret = random.RandomPassword(
            f"{name}-jwt-secret", random.RandomPasswordArgs(length=64, special=False), opts=child
        )
        values: dict[SecretName, pulumi.Input[str]] = {
            SecretName.DATABASE_PASSWORD: database_password.result,
            SecretName.JWT_SECRET: jwt_secret.result,
            SecretName.REDIS_AUTH_TOKEN: pulumi.Output.secret(args.redis_auth_string),
        }

        self.secret_ids = {}
        self.versions = []
        for secret_name in SecretName:
            secret = self._new_secret(name, secret_name.value, args)
            self.secret_ids[secret_name] = secret.id
            operator = secret_name in OPERATOR_SECRETS
            value = pulumi.Output.secret(PLACEHOLDER) if operator else values[secret_name]
            self.versions.append(
                self._add_version(name, secret_name.value, secret, value, operator=operator)
            )
        ca = self._new_secret(name, REDIS_CA, args)
        self.redis_ca_id = ca.id
        self.versions.append(
            self._add_version(name, REDIS_CA, ca, args.redis_server_ca, operator=False)
        )

        self.database_password = database_password.result
        self.register_outputs(
            {
                **{
                    f"{secret_name}_id": secret_id
                    for secret_name, secret_id in self.secret_ids.items()
                },
                "redis_ca_id": self.redis_ca_id,
            }
        )

    def _new_secret(self, name: str, role: str, args: SecretsArgs) -> gcp.secretmanager.Secret:
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        cmek = gcp.secretmanager.SecretReplicationUserManagedReplicaCustomerManagedEncryptionArgs(
            kms_key_name=args.kms_key_id
        )
        return gcp.secretmanager.Secret(
            f"{name}-{role}",
            gcp.secretmanager.SecretArgs(
                secret_id=f"billing-{settings.name}-{role}",
                replication=gcp.secretmanager.SecretReplicationArgs(
                    user_managed=gcp.secretmanager.SecretReplicationUserManagedArgs(
                        replicas=[
                            gcp.secretmanager.SecretReplicationUserManagedReplicaArgs(
                                location=settings.gcp.region, customer_managed_encryption=cmek
                            )
                        ]
                    )
                ),
                labels=labels(settings),
            ),
            # protect: deleting a secret deletes every version; services fail to start.
            opts=pulumi.ResourceOptions(
                parent=self, protect=settings.is_production, depends_on=list(args.depends_on)
            ),
        )

    def _add_version(
        self,
        name: str,
        role: str,
        secret: gcp.secretmanager.Secret,
        value: pulumi.Input[str],
        *,
        operator: bool,
    ) -> gcp.secretmanager.SecretVersion:
        production = self._production
        return gcp.secretmanager.SecretVersion(
            f"{name}-{role}-version",
            gcp.secretmanager.SecretVersionArgs(secret=secret.id, secret_data=value),
            # protect: a replaced version is destroyed while running revisions read it.
            # An operator's value (a later version) survives every up: ignore_changes.
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=production,
                ignore_changes=["secretData"] if operator else None,
            ),
        )
