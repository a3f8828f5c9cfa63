"""Service accounts: one per workload, each granted its own secrets and nothing else of note."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.manifests import SecretName
from infra.settings import EnvironmentSettings

# What every workload does: reach Cloud SQL, write logs, write metrics.
WORKLOAD_ROLES = (
    "roles/cloudsql.client",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
)


@dataclass(frozen=True)
class Workload:
    """A workload that runs as its own service account and reads the named secrets."""

    name: str
    secrets: Sequence[SecretName]
    # Whether it talks to Memorystore (and so reads the server CA secret).
    reads_cache: bool = False


@dataclass(frozen=True)
class IdentitiesArgs:
    settings: EnvironmentSettings
    workloads: Sequence[Workload]
    secret_ids: Mapping[SecretName, pulumi.Input[str]]
    redis_ca_id: pulumi.Input[str]


class Identities(pulumi.ComponentResource):
    """A service account per workload with secret-accessor on its own secrets only."""

    emails: dict[str, pulumi.Output[str]]
    grants: list[pulumi.Resource]

    def __init__(
        self, name: str, args: IdentitiesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Identities", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        child = pulumi.ResourceOptions(parent=self)

        self.emails = {}
        self.grants = []
        for workload in args.workloads:
            account = gcp.serviceaccount.Account(
                f"{name}-{workload.name}",
                gcp.serviceaccount.AccountArgs(
                    account_id=f"billing-{settings.name}-{workload.name}",
                    display_name=f"billing {workload.name} ({settings.name})",
                ),
                opts=child,
            )
            for role in WORKLOAD_ROLES:
                self.grants.append(
                    gcp.projects.IAMMember(
                        f"{name}-{workload.name}-{role.removeprefix('roles/')}",
                        gcp.projects.IAMMemberArgs(
                            project=settings.gcp.project, role=role, member=account.member
                        ),
                        opts=child,
                    )
                )
            for secret_name in sorted(set(workload.secrets)):
                # Per secret, not project-wide: a workload reads only the secrets it names.
                self.grants.append(
                    gcp.secretmanager.SecretIamMember(
                        f"{name}-{workload.name}-{secret_name}",
                        gcp.secretmanager.SecretIamMemberArgs(
                            secret_id=args.secret_ids[secret_name],
                            role="roles/secretmanager.secretAccessor",
                            member=account.member,
                        ),
                        opts=child,
                    )
                )
            if workload.reads_cache:
                self.grants.append(
                    gcp.secretmanager.SecretIamMember(
                        f"{name}-{workload.name}-redis-server-ca",
                        gcp.secretmanager.SecretIamMemberArgs(
                            secret_id=args.redis_ca_id,
                            role="roles/secretmanager.secretAccessor",
                            member=account.member,
                        ),
                        opts=child,
                    )
                )
            self.emails[workload.name] = account.email

        self.register_outputs(
            {f"{workload}_email": email for workload, email in self.emails.items()}
        )
