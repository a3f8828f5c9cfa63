"""What a stack program deploys: the environment and services its stack names, or, in an offline
render, the ones the render was handed (a drill's restore, a fixture of service manifests)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pulumi

from infra.manifests import ServiceManifest, manifests
from infra.settings import EnvironmentSettings, environment

_rendering: tuple[EnvironmentSettings, dict[str, ServiceManifest]] | None = None


def settings() -> EnvironmentSettings:
    """The environment the running stack deploys."""
    return _rendering[0] if _rendering is not None else environment(pulumi.get_stack())


def services() -> dict[str, ServiceManifest]:
    """The services the running stack deploys, by name."""
    return dict(_rendering[1]) if _rendering is not None else manifests()


@contextmanager
def rendering(
    env: EnvironmentSettings, services_: Mapping[str, ServiceManifest] | None = None
) -> Iterator[None]:
    """Hand a program these settings and services for the length of one offline render."""
    global _rendering  # noqa: PLW0603 - one render at a time, restored on exit
    previous = _rendering
    _rendering = (env, dict(manifests() if services_ is None else services_))
    try:
        yield
    finally:
        _rendering = previous
