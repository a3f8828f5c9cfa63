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

from infra.gcp.google_apis import required_apis
from infra.settings import EnvironmentSettings


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
