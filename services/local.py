"""`python -m services.local`: the whole platform on 127.0.0.1 for development.

Starts PostgreSQL and Redis under build/local, migrates, then runs the API and the worker with
exactly the variables their manifests declare, filled the way the dev environment fills them
(simulator gateway, no TLS). Ctrl-C or SIGTERM stops everything in reverse order.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx

from infra.settings import environment
from services import devservers
from services.api.security import mint_token
from services.billing.config import JwtSettings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
SERVICES = Path(__file__).resolve().parent
DEFAULT_DIRECTORY = REPOSITORY_ROOT / "build" / "local"
SHUTDOWN_GRACE_SECONDS = 30
STARTUP_TIMEOUT_SECONDS = 60
Output = IO[bytes] | int | None


@dataclass
class LocalStack:
    """A running platform: its URL, the secrets it was given and the services' environments."""

    url: str
    # Readiness and metrics: the API's internal port.
    internal_url: str
    secrets: dict[str, str]
    api_env: dict[str, str]
    worker_env: dict[str, str]
    services: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # The servers themselves, for the benchmark (its floor reads past row-level security as
    # the superuser, and it counts their CPU time).
    postgres: devservers.PostgresServer | None = None
    cache: devservers.RedisServer | None = None

    def token(
        self, subject: str, *, tenant: str = "local", lifetime: timedelta = timedelta(hours=12)
    ) -> str:
        """An admin token for the tenant, signed with the stack's secret and default issuer."""
        return mint_token(
            JwtSettings(secret=self.secrets["jwt-secret"]),
            tenant=tenant,
            subject=subject,
            lifetime=lifetime,
        )


@contextmanager
def local_stack(
    directory: Path,
    *,
    port: int = 0,
    with_worker: bool = True,
    output: Output = None,
    stop_requested: threading.Event | None = None,
    rate_limit_per_minute: int | None = None,
) -> Iterator[LocalStack]:
    """Start databases, migrate, start the services; stop all of it on the way out.

    The API's rate limit is dev's (environments/dev) unless rate_limit_per_minute says otherwise.
    """
    if rate_limit_per_minute is None:
        rate_limit_per_minute = environment("dev").api.rate_limit_per_minute
    local_secrets = load_secrets(directory)
    postgres = devservers.start_postgres(
        directory / "postgres", password=local_secrets["database-password"]
    )
    cache: devservers.RedisServer | None = None
    stack: LocalStack | None = None
    try:
        cache = devservers.start_redis(
            directory / "redis", auth_token=local_secrets["redis-auth-token"]
        )
        sources = {
            "environment": "dev",
            "service.port": str(port or devservers.free_port()),
            "database.host": postgres.host,
            "database.port": str(postgres.port),
            "database.name": postgres.database,
            "database.username": postgres.user,
            "cache.host": cache.host,
            "cache.port": str(cache.port),
            "cache.tls": "false",
            # Plain Redis on loopback: no server CA to trust.
            "cache.ca_file": "",
            "payment.gateway": "simulator",
            "api.rate_limit_per_minute": str(rate_limit_per_minute),
        }
        api, worker = load_manifest("api"), load_manifest("worker")
        internal_port = str(devservers.free_port())
        stack = LocalStack(
            url=f"http://127.0.0.1:{sources['service.port']}",
            internal_url=f"http://127.0.0.1:{internal_port}",
            secrets=local_secrets,
            api_env=manifest_environment(
                api,
                sources,
                local_secrets,
                BILLING_HOST="127.0.0.1",
                BILLING_INTERNAL_PORT=internal_port,
            ),
            worker_env=manifest_environment(worker, sources, local_secrets),
            postgres=postgres,
            cache=cache,
        )
        subprocess.run(
            resolve_command(api["migrations"]["command"]),
            cwd=REPOSITORY_ROOT,
            env=stack.api_env,
            check=True,
            stdout=output,
            stderr=output,
        )
        stack.services.append(start_service(api, stack.api_env, output=output))
        if with_worker:
            stack.services.append(start_service(worker, stack.worker_env, output=output))
        wait_for_health(
            stack.url + api["health_path"], stack.services, stop_requested or threading.Event()
        )
        yield stack
    finally:
        for service in reversed(stack.services if stack else []):
            terminate(service)
        if cache is not None:
            cache.stop()
        postgres.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.local", description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIRECTORY, help="state directory")
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument("--fresh", action="store_true", help="start from an empty database")
    arguments = parser.parse_args(argv)
    directory: Path = arguments.dir.resolve()
    if arguments.fresh:
        shutil.rmtree(directory, ignore_errors=True)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        del signum
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with local_stack(directory, port=arguments.port, stop_requested=stop_requested) as stack:
        print(f"Billing API ready at {stack.url}", flush=True)  # the command's output
        print(f"Readiness and metrics at {stack.internal_url}", flush=True)
        print(f"OpenAPI: {stack.url}/docs", flush=True)
        print(f"Bearer token (12 h): {stack.token('local-developer')}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        while not stop_requested.wait(0.5):
            if any(service.poll() is not None for service in stack.services):
                print("a service exited; stopping everything", file=sys.stderr)
                return 1
    return 0


def load_manifest(service: str) -> dict[str, Any]:
    with (SERVICES / service / "manifest.toml").open("rb") as handle:
        return tomllib.load(handle)


def manifest_environment(
    manifest: dict[str, Any], sources: dict[str, str], local_secrets: dict[str, str], **extra: str
) -> dict[str, str]:
    """The manifest's variables, each filled from its declared source or secret."""
    env = {**os.environ, **extra}
    for name, source in manifest["environment"].items():
        if source not in sources:
            raise SystemExit(f"{manifest['name']}: unknown value source {source!r} for {name}")
        env[name] = sources[source]
    for name, secret in manifest["secrets"].items():
        if secret not in local_secrets:
            raise SystemExit(f"{manifest['name']}: unknown secret {secret!r} for {name}")
        env[name] = local_secrets[secret]
    return env


def load_secrets(directory: Path) -> dict[str, str]:
    """Random local-only secrets, kept beside the data they protect so a restart reuses them."""
    path = directory / "secrets.json"
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    generated = {
        "database-password": secrets.token_urlsafe(24),
        "redis-auth-token": secrets.token_urlsafe(24),
        "jwt-secret": secrets.token_urlsafe(48),
        # The simulator needs no Stripe key.
        "stripe-api-key": "",
        "stripe-webhook-secret": "whsec_local_" + secrets.token_hex(16),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(generated, indent=2), encoding="utf-8")
    return generated


def resolve_command(command: list[str]) -> list[str]:
    """Run manifest commands with this interpreter and the tools installed beside it."""
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    beside_interpreter = shutil.which(command[0], path=str(Path(sys.executable).parent))
    return [beside_interpreter or command[0], *command[1:]]


def start_service(
    manifest: dict[str, Any], env: dict[str, str], *arguments: str, output: Output = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*resolve_command(manifest["command"]), *arguments],
        cwd=REPOSITORY_ROOT,
        env=env,
        stdout=output,
        stderr=output,
    )


def wait_for_health(
    url: str, services: list[subprocess.Popen[bytes]], stop_requested: threading.Event
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not stop_requested.is_set():
        if any(service.poll() is not None for service in services):
            raise SystemExit("a service exited during startup")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer within {STARTUP_TIMEOUT_SECONDS} s")
        time.sleep(0.1)


def terminate(service: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait for the graceful shutdown; SIGKILL only past the grace period."""
    if service.poll() is None:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=SHUTDOWN_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
