"""The Google APIs the GCP stack uses, enabled by the stack before anything that needs them.

A fresh project has almost no API enabled, and a resource created before its API fails with
"Error 403: ... API has not been used in project ... or it is disabled" (pulumi/pulumi-gcp#675,
pulumi/pulumi-gcp#574). Every resource of the stack goes through one provider that depends on
these services, so nothing is created before its API is on. ``disable_on_destroy=False``: a
destroy of this stack must not switch off APIs other stacks or people in the project use.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.settings import EnvironmentSettings

# The API each resource module of pulumi-gcp calls (type token module -> service). The
# deploy-readiness rule gcp-api-enabled reads the same table.
API_OF_MODULE = {
    "artifactregistry": "artifactregistry.googleapis.com",
    "cloudrunv2": "run.googleapis.com",
    "compute": "compute.googleapis.com",
    "dns": "dns.googleapis.com",
    "kms": "cloudkms.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
    "projects": "cloudresourcemanager.googleapis.com",
    "redis": "redis.googleapis.com",
    "secretmanager": "secretmanager.googleapis.com",
    "serviceaccount": "iam.googleapis.com",
    "servicenetworking": "servicenetworking.googleapis.com",
    "sql": "sqladmin.googleapis.com",
    "vpcaccess": "vpcaccess.googleapis.com",
}
# Needed without a resource of their own: ServiceIdentity resources call Service Usage.
EXTRA_APIS = ("serviceusage.googleapis.com", "iamcredentials.googleapis.com")
# Resource types that manage APIs themselves (and so cannot wait for them).
ENABLES_APIS = frozenset({"gcp:projects/service:Service"})


def required_apis() -> list[str]:
    return sorted({*API_OF_MODULE.values(), *EXTRA_APIS})


@dataclass(frozen=True)
class ApisArgs:
    settings: EnvironmentSettings


class Apis(pulumi.ComponentResource):
    """One gcp.projects.Service per API; left enabled when the stack is destroyed."""

    services: list[gcp.projects.Service]

    def __init__(
        self, name: str, args: ApisArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Apis", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        self.services = [
            gcp.projects.Service(
                f"{name}-{api.split('.')[0]}",
                gcp.projects.ServiceArgs(
                    project=settings.gcp.project,
                    service=api,
                    disable_on_destroy=False,
                    disable_dependent_services=False,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in required_apis()
        ]
        self.register_outputs({"services": [s.service for s in self.services]})
