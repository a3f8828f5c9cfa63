"""Settings read exactly the variables the manifests declare, and name what is wrong."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from services.billing.config import (
    API_VARIABLES,
    BIND_HOST_VARIABLE,
    OPTIONAL_API_VARIABLES,
    ConfigError,
    GatewayKind,
    Settings,
)

SERVICES = Path(__file__).resolve().parents[1]
FAKE_VALUES = {
    "environment": "dev",
    "service.port": "8000",
    "database.host": "db.internal",
    "database.port": "5432",
    "database.name": "billing",
    "database.username": "billing",
    "cache.host": "cache.internal",
    "cache.port": "6379",
    "cache.tls": "true",
    "cache.ca_file": "/etc/billing/redis-ca/ca.pem",
    "payment.gateway": "simulator",
    "api.rate_limit_per_minute": "600",
}


# 32 bytes, the shortest HS256 key the API accepts.
FAKE_JWT_SECRET = "fake-jwt-secret-0123456789abcdef"


def manifest(service: str) -> dict[str, Any]:
    with (SERVICES / service / "manifest.toml").open("rb") as handle:
        return tomllib.load(handle)


def environment_for(service: str) -> dict[str, str]:
    """What the infrastructure injects for a service: its manifest's variables, filled."""
    declared = manifest(service)
    values = {name: FAKE_VALUES[source] for name, source in declared["environment"].items()}
    values.update({name: f"fake-{secret}" for name, secret in declared["secrets"].items()})
    if "JWT_SECRET" in values:
        values["JWT_SECRET"] = FAKE_JWT_SECRET
    return values


class RecordingEnvironment(Mapping[str, str]):
    """A mapping that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        self.read.add(str(name))
        return name in self._values

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.read.add(name)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@pytest.mark.parametrize("service", ["api", "worker"])
def test_settings_read_only_what_the_manifest_declares(service: str) -> None:
    environment = RecordingEnvironment(environment_for(service))
    settings = Settings.from_env(environment)
    declared = set(manifest(service)["environment"]) | set(manifest(service)["secrets"])
    assert environment.read - declared <= {*OPTIONAL_API_VARIABLES, *_api_only(service)}
    assert settings.environment == "dev"
    assert settings.cache.tls is True
    assert settings.gateway.kind is GatewayKind.SIMULATOR
    assert settings.database.password == "fake-database-password"


def _api_only(service: str) -> set[str]:
    # The worker's settings look for the API's variables and find them absent.
    return set(API_VARIABLES) if service == "worker" else set()


def test_api_settings_need_port_and_jwt_secret() -> None:
    api = Settings.from_env(environment_for("api")).for_api()
    assert api.port == 8000
    assert api.jwt.secret == FAKE_JWT_SECRET
    assert (api.jwt.issuer, api.jwt.audience) == ("billing", "billing-api")
    assert api.settings.bind_host == "0.0.0.0"  # noqa: S104 - the container default
    with pytest.raises(ConfigError, match="BILLING_PORT"):
        Settings.from_env(environment_for("worker")).for_api()


def test_the_api_reads_its_rate_limit_from_the_environment() -> None:
    environment = {**environment_for("api"), "BILLING_RATE_LIMIT_PER_MINUTE": "25000"}
    assert Settings.from_env(environment).for_api().rate_limit_per_minute == 25000
    del environment["BILLING_RATE_LIMIT_PER_MINUTE"]
    with pytest.raises(ConfigError, match="BILLING_RATE_LIMIT_PER_MINUTE is required by the API"):
        Settings.from_env(environment).for_api()


def test_a_short_jwt_secret_is_refused() -> None:
    environment = {**environment_for("api"), "JWT_SECRET": FAKE_JWT_SECRET[:31]}
    with pytest.raises(ConfigError, match="JWT_SECRET must be at least 32 bytes"):
        Settings.from_env(environment).for_api()


def test_bind_host_can_be_overridden_locally() -> None:
    environment = {**environment_for("api"), BIND_HOST_VARIABLE: "127.0.0.1"}
    assert Settings.from_env(environment).bind_host == "127.0.0.1"


def test_database_url_escapes_the_password() -> None:
    environment = {**environment_for("api"), "DATABASE_PASSWORD": "p@ss:word/1"}
    url = Settings.from_env(environment).database.url()
    assert url.password == "p@ss:word/1"
    assert url.drivername == "postgresql+psycopg"
    assert "p%40ss%3Aword%2F1" in url.render_as_string(hide_password=False)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_HOST", None, "DATABASE_HOST is required"),
        ("DATABASE_PASSWORD", "", "DATABASE_PASSWORD is required"),
        ("DATABASE_PORT", "fifty", "DATABASE_PORT must be a TCP port"),
        ("REDIS_PORT", "70000", "REDIS_PORT must be a TCP port"),
        ("BILLING_PORT", "0", "BILLING_PORT must be a TCP port"),
        ("REDIS_TLS", "yes", "REDIS_TLS must be 'true' or 'false'"),
        ("PAYMENT_GATEWAY", "paypal", "PAYMENT_GATEWAY must be one of 'simulator', 'stripe'"),
        ("BILLING_RATE_LIMIT_PER_MINUTE", "0", "BILLING_RATE_LIMIT_PER_MINUTE must be a whole"),
        ("BILLING_RATE_LIMIT_PER_MINUTE", "6e2", "BILLING_RATE_LIMIT_PER_MINUTE must be a whole"),
        (
            "BILLING_RATE_LIMIT_PER_MINUTE",
            "1000001",
            "BILLING_RATE_LIMIT_PER_MINUTE must be a whole number from 1 to 1000000, got '1000001'",
        ),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str | None, message: str) -> None:
    environment = environment_for("api")
    if value is None:
        del environment[name]
    else:
        environment[name] = value
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environment)


def test_stripe_needs_its_api_key() -> None:
    environment = {**environment_for("api"), "PAYMENT_GATEWAY": "stripe", "STRIPE_API_KEY": ""}
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        Settings.from_env(environment)
    environment["STRIPE_API_KEY"] = "sk_test_fake"
    assert Settings.from_env(environment).gateway.kind is GatewayKind.STRIPE


def test_manifests_use_only_known_sources_and_secrets() -> None:
    secrets = {
        "database-password",
        "redis-auth-token",
        "jwt-secret",
        "stripe-api-key",
        "stripe-webhook-secret",
    }
    for service in ("api", "worker"):
        declared = manifest(service)
        assert set(declared["environment"].values()) <= set(FAKE_VALUES)
        assert set(declared["secrets"].values()) <= secrets
    assert manifest("api")["command"][:3] == ["python", "-m", "services.api"]
    assert manifest("worker")["command"] == ["python", "-m", "services.worker"]
