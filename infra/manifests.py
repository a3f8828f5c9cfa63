"""Service manifests: the contract between a service and the infrastructure that runs it.

Each ``services/<name>/manifest.toml`` names the service's port, health path, command,
environment variable names (each with the source the infrastructure fills it from), secret
names and default CPU and memory. Both clouds' programs and ``nox -s local`` read it.
"""

from __future__ import annotations

import zlib
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from infra.loading import load_toml_model
from infra.settings import SERVICES_DIR, SettingsError, server_processes_error, service_names


class ValueSource(StrEnum):
    """Where the infrastructure takes a plain environment value from."""

    ENVIRONMENT = "environment"
    SERVICE_PORT = "service.port"
    DATABASE_HOST = "database.host"
    # Read-only: the read replicas' hosts, comma-separated (libpq's multi-host form), or the
    # serving instance where an environment runs none. A service opts in by naming it.
    DATABASE_READ_HOST = "database.read_host"
    DATABASE_PORT = "database.port"
    DATABASE_NAME = "database.name"
    DATABASE_USERNAME = "database.username"
    CACHE_HOST = "cache.host"
    CACHE_PORT = "cache.port"
    CACHE_TLS = "cache.tls"
    # A file with the CA the cache's TLS certificate chains to; empty: the system's trust store.
    CACHE_CA_FILE = "cache.ca_file"
    PAYMENT_GATEWAY = "payment.gateway"
    # The environment's [api] rate_limit_per_minute (environments/<env>/settings.toml).
    API_RATE_LIMIT = "api.rate_limit_per_minute"


class SecretName(StrEnum):
    """The secrets the platform keeps; each service names the ones it reads."""

    DATABASE_PASSWORD = "database-password"
    REDIS_AUTH_TOKEN = "redis-auth-token"
    JWT_SECRET = "jwt-secret"
    STRIPE_API_KEY = "stripe-api-key"
    STRIPE_WEBHOOK_SECRET = "stripe-webhook-secret"


_ENV_NAME = r"^[A-Z][A-Z0-9_]*$"


class Migrations(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    command: Annotated[list[str], Field(min_length=1)]


# A load-balancer path: a prefix, optionally ending in "*" (both ALB path patterns and URL-map
# path rules take this form).
_PATH = r"^/[A-Za-z0-9._~/-]*\*?$"
# Listener-rule priorities derived from a name fall in this range; explicit ones may use any.
_DERIVED_PRIORITIES = (1000, 40000)


class Route(BaseModel):
    """How traffic reaches a service: path prefixes on the load balancer, or internal only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # At most five: an ALB rule takes five condition values (path patterns) in all.
    paths: Annotated[list[Annotated[str, Field(pattern=_PATH)]], Field(max_length=5)] = []
    # The ALB listener-rule priority; by default derived from the name, so adding or removing
    # another service never renumbers this one. Set it where paths overlap (lower wins).
    priority: Annotated[int, Field(ge=1, le=50000)] | None = None
    # No route from the load balancer: other services reach it by name (AWS Cloud Map).
    internal: bool = False


class ServiceManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
    description: str
    command: Annotated[list[str], Field(min_length=1)]
    port: Annotated[int, Field(ge=1024, le=65535)] | None = None
    health_path: Annotated[str, Field(pattern=r"^/")] | None = None
    ready_path: Annotated[str, Field(pattern=r"^/")] | None = None
    cpu: int
    memory: int
    public: bool
    environment: dict[Annotated[str, Field(pattern=_ENV_NAME)], ValueSource]
    secrets: dict[Annotated[str, Field(pattern=_ENV_NAME)], SecretName]
    migrations: Migrations | None = None
    route: Route | None = None

    @property
    def secret_names(self) -> list[SecretName]:
        return sorted(set(self.secrets.values()))

    @property
    def paths(self) -> list[str]:
        """The path prefixes the load balancer routes here (none: the default route, if public)."""
        return list(self.route.paths) if self.route is not None else []

    @property
    def internal(self) -> bool:
        return self.route is not None and self.route.internal

    @property
    def priority(self) -> int:
        """The service's listener-rule priority: stable whatever other services come and go."""
        if self.route is not None and self.route.priority is not None:
            return self.route.priority
        low, high = _DERIVED_PRIORITIES
        return low + zlib.crc32(self.name.encode()) % (high - low)


def load_manifest(path: Path) -> ServiceManifest:
    """Read and validate one manifest, or raise SettingsError naming the file and key."""
    manifest = load_toml_model(path, ServiceManifest, SettingsError)
    if manifest.name != path.parent.name:
        raise SettingsError(path, "name", f"'{manifest.name}' differs from the folder name")
    if manifest.public and (manifest.port is None or manifest.health_path is None):
        raise SettingsError(path, "port", "a public service needs port and health_path")
    if manifest.paths and not manifest.public:
        raise SettingsError(path, "route.paths", "only a public service has paths")
    if manifest.internal and (manifest.public or manifest.port is None):
        raise SettingsError(
            path, "route.internal", "an internal service is not public and has a port"
        )
    processes = server_processes_error(manifest.command, manifest.cpu)
    if processes is not None:
        raise SettingsError(path, "command", processes)
    return manifest


def check_routes(services: dict[str, ServiceManifest], services_dir: Path) -> None:
    """One default route at most, no path or listener priority claimed twice."""

    def where(name: str) -> Path:
        return services_dir / name / "manifest.toml"

    defaults = sorted(n for n, m in services.items() if m.public and not m.paths)
    if len(defaults) > 1:
        raise SettingsError(
            where(defaults[1]),
            "route.paths",
            f"public without paths, like {defaults[0]}: one service takes the "
            "default route, the others name their paths",
        )
    paths: dict[str, str] = {}
    priorities: dict[int, str] = {}
    for name, manifest in sorted(services.items()):
        for prefix in manifest.paths:
            if prefix in paths:
                raise SettingsError(where(name), "route.paths", f"{prefix} is {paths[prefix]}'s")
            paths[prefix] = name
        if manifest.paths:
            if manifest.priority in priorities:
                raise SettingsError(
                    where(name),
                    "route.priority",
                    f"{manifest.priority} is {priorities[manifest.priority]}'s; "
                    "set route.priority to another value",
                )
            priorities[manifest.priority] = name


@cache
def manifests(services_dir: Path = SERVICES_DIR) -> dict[str, ServiceManifest]:
    """Every deployable service's manifest, by name."""
    found = {
        name: load_manifest(services_dir / name / "manifest.toml")
        for name in service_names(services_dir)
    }
    check_routes(found, services_dir)
    return found
