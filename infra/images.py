"""Image references: the registry model every environment pulls its service images through.

CI builds each service once and pushes it to the build registry (``ghcr.io/<org>/...``);
``environments/<env>/pins.toml`` pins each image by digest (``...:<tag>@sha256:<digest>``, the
tag only for people). No runtime pulls from the build registry itself: each environment reads
it through a pull-through cache in its own cloud, with its own credentials -

- AWS: an ECR pull-through cache rule in the environment's account
  (https://docs.aws.amazon.com/AmazonECR/latest/userguide/pull-through-cache.html); ECS pulls
  ``<account>.dkr.ecr.<region>.amazonaws.com/<prefix>/<path>@<digest>`` with the task execution
  role, which may create the cached repository on the first pull.
- GCP: an Artifact Registry remote repository of the build registry; Cloud Run's service agent
  pulls ``<region>-docker.pkg.dev/<project>/<repository>/<path>@<digest>`` and holds reader on it.

Why this model: promotion moves pins only (a digest tested in dev is byte for byte what
production runs), there is no copy step to forget, and each environment keeps a cached copy
if the build registry is unreachable. No SDK import here: the policy rules use it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_REFERENCE = re.compile(
    r"^(?P<registry>[a-z0-9.\-]+(:\d+)?)/(?P<path>[a-z0-9._\-]+(/[a-z0-9._\-]+)*)"
    r"(:(?P<tag>[A-Za-z0-9._\-]{1,128}))?(@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")

# Upstream registries an ECR pull-through cache rule accepts, with the URL the rule names
# (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_CreatePullThroughCacheRule.html)
# and whether it needs credentials in a Secrets Manager secret.
ECR_UPSTREAMS = {
    "ghcr.io": ("ghcr.io", True),
    "docker.io": ("registry-1.docker.io", True),
    "registry.gitlab.com": ("registry.gitlab.com", True),
    "quay.io": ("quay.io", False),
    "public.ecr.aws": ("public.ecr.aws", False),
    "registry.k8s.io": ("registry.k8s.io", False),
}


@dataclass(frozen=True)
class ImageRef:
    registry: str
    path: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, reference: str) -> ImageRef:
        match = _REFERENCE.match(reference)
        if match is None:
            raise ValueError(f"'{reference}' is not an image reference")
        return cls(match["registry"], match["path"], match["tag"], match["digest"])

    @property
    def pinned(self) -> str:
        """``path@digest`` (or ``path:tag`` when unpinned: the readiness rules refuse those)."""
        return (
            f"{self.path}@{self.digest}" if self.digest else f"{self.path}:{self.tag or 'latest'}"
        )


def ecr_prefix(environment: str) -> str:
    """The ECR repository prefix of an environment's pull-through cache (2-30 characters)."""
    return f"billing-{environment}"


def ecr_image(account: str, region: str, environment: str, reference: str) -> str:
    """Where ECS pulls a pinned image: the environment's own pull-through cache."""
    image = ImageRef.parse(reference)
    return f"{account}.dkr.ecr.{region}.amazonaws.com/{ecr_prefix(environment)}/{image.pinned}"
