"""Service manifests: the contract between a service and the infrastructure that runs it.

Each ``services/<name>/manifest.toml`` names the service's port, health path, command,
environment variable names (each with the source the infrastructure fills it from), secret
names and default CPU and memory. Both clouds' programs and ``nox -s local`` read it.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.settings import SERVICES_DIR, SettingsError, service_names


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
    PAYMENT_GATEWAY = "payment.gateway"


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

    @property
    def secret_names(self) -> list[SecretName]:
        return sorted(set(self.secrets.values()))


def load_manifest(path: Path) -> ServiceManifest:
    """Read and validate one manifest, or raise SettingsError naming the file and key."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(path, None, "file is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(path, None, f"invalid TOML: {exc}") from None
    try:
        manifest = ServiceManifest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else str(error["msg"])
        raise SettingsError(path, key, message) from None
    if manifest.name != path.parent.name:
        raise SettingsError(path, "name", f"'{manifest.name}' differs from the folder name")
    if manifest.public and (manifest.port is None or manifest.health_path is None):
        raise SettingsError(path, "port", "a public service needs port and health_path")
    return manifest


@cache
def manifests(services_dir: Path = SERVICES_DIR) -> dict[str, ServiceManifest]:
    """Every deployable service's manifest, by name."""
    return {
        name: load_manifest(services_dir / name / "manifest.toml")
        for name in service_names(services_dir)
    }
