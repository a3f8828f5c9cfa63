"""Artifact Registry: a CMEK remote repository serving the pinned service images to Cloud Run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from infra.images import ImageRef
from infra.settings import ENVIRONMENTS_DIR, PINS_FILE, EnvironmentSettings, SettingsError
from infra.tagging import labels

# Cleanup windows, in seconds as the API takes them.
_DAY = 24 * 60 * 60
UNTAGGED_AFTER = f"{7 * _DAY}s"
TAGGED_AFTER = f"{90 * _DAY}s"
KEEP_RECENT_VERSIONS = 10


def split_image(settings: EnvironmentSettings, service: str) -> tuple[str, str]:
    """A pinned image as (registry host, path@digest): Cloud Run runs exactly the pinned digest."""
    image = ImageRef.parse(settings.pins.images[service])
    return image.registry, image.pinned


def upstream_registry(settings: EnvironmentSettings) -> str:
    """The one registry every pinned image comes from; the remote repository mirrors it."""
    registries = {service: split_image(settings, service)[0] for service in settings.pins.images}
    first = next(iter(sorted(registries.values())))
    for service, registry in sorted(registries.items()):
        if registry != first:
            raise SettingsError(
                ENVIRONMENTS_DIR / settings.name / PINS_FILE,
                f"images.{service}",
                f"image registry '{registry}' differs from '{first}': GCP mirrors one registry",
            )
    return first


@dataclass(frozen=True)
class RegistryArgs:
    settings: EnvironmentSettings
    kms_key_id: pulumi.Input[str]
    # The key grant to Artifact Registry's agent: without it, creating the repository fails.
    depends_on: Sequence[pulumi.Resource] = field(default_factory=list)


class Registry(pulumi.ComponentResource):
    """A Docker remote repository in front of the images' registry, with cleanup policies."""

    repository_id: pulumi.Output[str]
    images: Mapping[str, pulumi.Output[str]]
    # Cloud Run's agent may pull: workloads wait for this grant.
    pull_grant: pulumi.Resource

    def __init__(
        self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("billing:gcp:Registry", name, None, opts)
        settings = args.settings
        assert settings.gcp is not None  # noqa: S101 - the program only runs for GCP stacks
        region = settings.gcp.region
        upstream = upstream_registry(settings)

        # Cloud Run pulls only from Artifact Registry (or Docker Hub); a remote repository
        # serves the exact pinned images and keeps a copy if the upstream is unreachable.
        repository = gcp.artifactregistry.Repository(
            f"{name}-images",
            gcp.artifactregistry.RepositoryArgs(
                repository_id=f"billing-{settings.name}",
                location=region,
                format="DOCKER",
                mode="REMOTE_REPOSITORY",
                description=f"Billing service images, mirrored from {upstream}",
                remote_repository_config=gcp.artifactregistry.RepositoryRemoteRepositoryConfigArgs(
                    description=upstream,
                    docker_repository=gcp.artifactregistry.RepositoryRemoteRepositoryConfigDockerRepositoryArgs(
                        custom_repository=gcp.artifactregistry.RepositoryRemoteRepositoryConfigDockerRepositoryCustomRepositoryArgs(
                            uri=f"https://{upstream}"
                        )
                    ),
                ),
                kms_key_name=args.kms_key_id,
                cleanup_policy_dry_run=False,
                cleanup_policies=[
                    gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                        id="keep-recent",
                        action="KEEP",
                        most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                            keep_count=KEEP_RECENT_VERSIONS
                        ),
                    ),
                    gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                        id="delete-untagged",
                        action="DELETE",
                        condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                            tag_state="UNTAGGED", older_than=UNTAGGED_AFTER
                        ),
                    ),
                    gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                        id="delete-old",
                        action="DELETE",
                        condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                            tag_state="ANY", older_than=TAGGED_AFTER
                        ),
                    ),
                ],
                labels=labels(settings),
            ),
            # protect: a release pulls its image through this repository.
            opts=pulumi.ResourceOptions(
                parent=self, protect=settings.is_production, depends_on=list(args.depends_on)
            ),
        )

        # Cloud Run pulls as its service agent; it may read this repository explicitly (the
        # implicit same-project grant is not there when the agent's role was removed, and the
        # deploy-readiness rule can see this one).
        # https://cloud.google.com/run/docs/deploying#other-projects
        run_agent = gcp.projects.ServiceIdentity(
            f"{name}-run-agent",
            gcp.projects.ServiceIdentityArgs(
                project=settings.gcp.project, service="run.googleapis.com"
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.pull_grant = gcp.artifactregistry.RepositoryIamMember(
            f"{name}-run-agent-reader",
            gcp.artifactregistry.RepositoryIamMemberArgs(
                project=settings.gcp.project,
                location=region,
                repository=repository.repository_id,
                role="roles/artifactregistry.reader",
                member=run_agent.member,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.repository_id = repository.repository_id
        host = f"{region}-docker.pkg.dev/{settings.gcp.project}/"
        self.images = {
            service: pulumi.Output.concat(
                host, repository.repository_id, "/", split_image(settings, service)[1]
            )
            for service in sorted(settings.pins.images)
        }
        self.register_outputs({"repository_id": self.repository_id, **self.images})
