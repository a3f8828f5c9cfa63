"""Service configuration, read from the environment variables the manifests declare.

The names here are the contract with the infrastructure (services/*/manifest.toml): the Pulumi
programs fill exactly these variables, so a rename here is a rename there.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import URL

if TYPE_CHECKING:
    from collections.abc import Mapping


class ConfigError(ValueError):
    """A required variable is missing or holds a value the services cannot use."""


class GatewayKind(StrEnum):
    """Which payment gateway the services charge through."""

    SIMULATOR = "simulator"
    STRIPE = "stripe"


# Variables every service reads (both manifests declare them).
COMMON_VARIABLES = (
    "BILLING_ENVIRONMENT",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_USER",
    "DATABASE_PASSWORD",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_TLS",
    "REDIS_CA_FILE",
    "REDIS_AUTH_TOKEN",
    "PAYMENT_GATEWAY",
    "STRIPE_API_KEY",
)
# Variables only the API's manifest declares.
API_VARIABLES = (
    "BILLING_PORT",
    "JWT_SECRET",
    "STRIPE_WEBHOOK_SECRET",
    "BILLING_RATE_LIMIT_PER_MINUTE",
)
# Requests per minute per principal before 429; each environment sets its own
# (environments/<env>/settings.toml, [api] rate_limit_per_minute).
RATE_LIMIT_VARIABLE = "BILLING_RATE_LIMIT_PER_MINUTE"
MAX_RATE_LIMIT_PER_MINUTE = 1_000_000
# A local override for the API's bind address; deliberately in neither manifest.
BIND_HOST_VARIABLE = "BILLING_HOST"
DEFAULT_BIND_HOST = "0.0.0.0"  # noqa: S104 - the API listens on all interfaces in its container.
# Optional API variables with safe defaults, in neither manifest: the token's expected issuer
# and audience.
JWT_ISSUER_VARIABLE = "JWT_ISSUER"
JWT_AUDIENCE_VARIABLE = "JWT_AUDIENCE"
# The port of /ready and /metrics, which the load balancer never routes to.
INTERNAL_PORT_VARIABLE = "BILLING_INTERNAL_PORT"
DEFAULT_INTERNAL_PORT = 9000
# Comma-separated addresses or CIDR ranges of the load balancer; forwarded headers from
# anyone else are ignored. Empty: none are believed.
TRUSTED_PROXIES_VARIABLE = "BILLING_TRUSTED_PROXIES"
OPTIONAL_API_VARIABLES = (
    BIND_HOST_VARIABLE,
    JWT_ISSUER_VARIABLE,
    JWT_AUDIENCE_VARIABLE,
    INTERNAL_PORT_VARIABLE,
    TRUSTED_PROXIES_VARIABLE,
)
DEFAULT_JWT_ISSUER = "billing"
DEFAULT_JWT_AUDIENCE = "billing-api"
# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output (32 bytes).
MIN_JWT_SECRET_BYTES = 32


@dataclass(frozen=True)
class DatabaseSettings:
    """Where PostgreSQL is and how to log in."""

    host: str
    port: int
    name: str
    user: str
    password: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> DatabaseSettings:
        """Only the DATABASE_* variables: all the one-off migration task needs."""
        reader = _Reader(environ)
        return cls(
            host=reader.required("DATABASE_HOST"),
            port=reader.port("DATABASE_PORT"),
            name=reader.required("DATABASE_NAME"),
            user=reader.required("DATABASE_USER"),
            password=reader.required("DATABASE_PASSWORD"),
        )

    def url(self) -> URL:
        """The SQLAlchemy URL (psycopg 3 driver); URL.create escapes the password."""
        return URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.name,
        )


@dataclass(frozen=True)
class CacheSettings:
    """Where Redis is; an empty auth token means the server asks for none."""

    host: str
    port: int
    tls: bool
    auth_token: str
    # The CA that signs the server's certificate (Memorystore's own CA, mounted by the GCP
    # program); None: the system store (ElastiCache presents a certificate of a public CA).
    ca_file: str | None = None

    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"


@dataclass(frozen=True)
class GatewaySettings:
    """Which payment gateway to use and its credentials."""

    kind: GatewayKind
    stripe_api_key: str
    stripe_webhook_secret: str


@dataclass(frozen=True)
class JwtSettings:
    """How bearer tokens are checked: HS256 with this secret, issuer and audience."""

    secret: str
    issuer: str = DEFAULT_JWT_ISSUER
    audience: str = DEFAULT_JWT_AUDIENCE


@dataclass(frozen=True)
class Settings:
    """Everything a billing service needs; API-only values are None in the worker."""

    environment: str
    database: DatabaseSettings
    cache: CacheSettings
    gateway: GatewaySettings
    port: int | None
    jwt_secret: str | None
    rate_limit_per_minute: int | None = None
    bind_host: str = DEFAULT_BIND_HOST
    jwt_issuer: str = DEFAULT_JWT_ISSUER
    jwt_audience: str = DEFAULT_JWT_AUDIENCE
    internal_port: int = DEFAULT_INTERNAL_PORT
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the manifests' variables; API-only ones may be absent (the worker has none)."""
        reader = _Reader(environ)
        gateway_kind = reader.choice("PAYMENT_GATEWAY", GatewayKind)
        settings = cls(
            environment=reader.required("BILLING_ENVIRONMENT"),
            database=DatabaseSettings.from_env(environ),
            cache=CacheSettings(
                host=reader.required("REDIS_HOST"),
                port=reader.port("REDIS_PORT"),
                tls=reader.boolean("REDIS_TLS"),
                ca_file=environ.get("REDIS_CA_FILE") or None,
                # ElastiCache and Memorystore may run without AUTH; the secret is then empty.
                auth_token=environ.get("REDIS_AUTH_TOKEN", ""),
            ),
            gateway=GatewaySettings(
                kind=gateway_kind,
                stripe_api_key=environ.get("STRIPE_API_KEY", ""),
                stripe_webhook_secret=environ.get("STRIPE_WEBHOOK_SECRET", ""),
            ),
            port=reader.port("BILLING_PORT") if "BILLING_PORT" in environ else None,
            jwt_secret=environ.get("JWT_SECRET") or None,
            rate_limit_per_minute=(
                reader.count(RATE_LIMIT_VARIABLE, MAX_RATE_LIMIT_PER_MINUTE)
                if RATE_LIMIT_VARIABLE in environ
                else None
            ),
            bind_host=environ.get(BIND_HOST_VARIABLE) or DEFAULT_BIND_HOST,
            jwt_issuer=environ.get(JWT_ISSUER_VARIABLE) or DEFAULT_JWT_ISSUER,
            jwt_audience=environ.get(JWT_AUDIENCE_VARIABLE) or DEFAULT_JWT_AUDIENCE,
            internal_port=(
                reader.port(INTERNAL_PORT_VARIABLE)
                if environ.get(INTERNAL_PORT_VARIABLE)
                else DEFAULT_INTERNAL_PORT
            ),
            trusted_proxies=reader.networks(TRUSTED_PROXIES_VARIABLE),
        )
        if settings.port is not None and settings.port == settings.internal_port:
            raise ConfigError(
                f"{INTERNAL_PORT_VARIABLE} must differ from BILLING_PORT ({settings.port})"
            )
        if gateway_kind is GatewayKind.STRIPE and not settings.gateway.stripe_api_key:
            raise ConfigError("STRIPE_API_KEY is required when PAYMENT_GATEWAY is 'stripe'")
        return settings

    def for_api(self) -> ApiSettings:
        """Check the API-only values are present and return them typed as present."""
        if self.port is None:
            raise ConfigError("BILLING_PORT is required by the API")
        if not self.jwt_secret:
            raise ConfigError("JWT_SECRET is required by the API")
        if len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes "
                f"(HS256 keys shorter than the hash are guessable), got "
                f"{len(self.jwt_secret.encode())}"
            )
        if self.rate_limit_per_minute is None:
            raise ConfigError(f"{RATE_LIMIT_VARIABLE} is required by the API")
        return ApiSettings(
            settings=self,
            port=self.port,
            rate_limit_per_minute=self.rate_limit_per_minute,
            internal_port=self.internal_port,
            trusted_proxies=self.trusted_proxies,
            jwt=JwtSettings(
                secret=self.jwt_secret, issuer=self.jwt_issuer, audience=self.jwt_audience
            ),
        )


@dataclass(frozen=True)
class ApiSettings:
    """Settings with the API's own values known to be present."""

    settings: Settings
    port: int
    jwt: JwtSettings
    rate_limit_per_minute: int
    internal_port: int = DEFAULT_INTERNAL_PORT
    trusted_proxies: tuple[str, ...] = ()


class _Reader:
    """Parses variables and names the offending one in every error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def required(self, name: str) -> str:
        value = self._environ.get(name, "")
        if not value:
            raise ConfigError(f"{name} is required and is missing or empty")
        return value

    def port(self, name: str) -> int:
        raw = self.required(name)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"{name} must be a TCP port (1-65535), got {raw!r}")
        return int(raw)

    def count(self, name: str, maximum: int) -> int:
        """A whole number from 1 to maximum."""
        raw = self.required(name)
        if not raw.isdigit() or not 0 < int(raw) <= maximum:
            raise ConfigError(f"{name} must be a whole number from 1 to {maximum}, got {raw!r}")
        return int(raw)

    def boolean(self, name: str) -> bool:
        raw = self.required(name)
        if raw not in {"true", "false"}:
            raise ConfigError(f"{name} must be 'true' or 'false', got {raw!r}")
        return raw == "true"

    def networks(self, name: str) -> tuple[str, ...]:
        """Optional comma-separated IP addresses or CIDR ranges."""
        raw = self._environ.get(name, "")
        ranges = tuple(part.strip() for part in raw.split(",") if part.strip())
        for item in ranges:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{name} must list IP addresses or CIDR ranges, got {item!r}"
                ) from None
        return ranges

    def choice(self, name: str, kind: type[GatewayKind]) -> GatewayKind:
        raw = self.required(name)
        try:
            return kind(raw)
        except ValueError:
            allowed = ", ".join(repr(member.value) for member in kind)
            raise ConfigError(f"{name} must be one of {allowed}, got {raw!r}") from None
