"""`python -m services.bench_profile`: where the API's CPU goes, per request, with no server.

The app is built as one server process builds it and called directly as ASGI (no HTTP server,
no sockets to the client), by `--concurrency` requests at a time on uvloop, against the local
stack's PostgreSQL and Redis. It prints the process's CPU time per request, the garbage
collector's pauses, and with `--profile` the share of CPU (cProfile's own time) by module: the
figures behind the README's "where a request's CPU goes". The server's own cost (uvicorn,
httptools, the sockets) is what `python -m services.bench_api` adds on top.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import uvloop

from services import devservers
from services.api.app import create_app
from services.bench_api import (
    NEW_CUSTOMER,
    bench_stack,
    database_and_cache_pids,
    tree_cpu_seconds,
)
from services.billing.config import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message

    from services.billing.config import ApiSettings

GET = "GET"
POST = "POST"


@dataclass
class Profile:
    requests: int
    statuses: Counter[int]
    cpu_seconds: float
    wall_seconds: float
    # (generation, seconds) of each collection during the run.
    pauses: list[tuple[int, float]] = field(default_factory=list)
    # Share of the profiled CPU by module (package, or file for the project's own code).
    modules: list[tuple[str, float]] = field(default_factory=list)
    # CPU of the processes given as `services` (PostgreSQL and Redis) during the run.
    services_cpu_seconds: float | None = None

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds / self.requests * 1000


def _module(filename: str, function: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/services/" in filename:
        return "services/" + filename.split("/services/", 1)[1]
    if "/python3." in filename:
        return filename.rsplit("/", 1)[-1]
    return function  # built-ins: "<method 'write' of ...>"


def _by_module(profiler: cProfile.Profile, top: int = 15) -> list[tuple[str, float]]:
    # Stats.stats: {(file, line, function): (calls, primitive calls, own time, cumulative, ...)}
    stats: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    own: Counter[str] = Counter()
    for (filename, _, function), (_, _, own_seconds, *_) in stats.items():
        own[_module(filename, function)] += own_seconds
    total = sum(own.values()) or 1.0
    return [(name, seconds / total) for name, seconds in own.most_common(top)]


def _request(
    method: str, path: str, token: str, body: bytes
) -> tuple[dict[str, Any], list[Message]]:
    headers = [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())]
    if method == POST:
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"idempotency-key", uuid.uuid4().hex.encode()),
        ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    return scope, [{"type": "http.request", "body": body, "more_body": False}]


async def _call(app: ASGIApp, method: str, path: str, token: str, body: bytes) -> int:
    scope, inbox = _request(method, path, token, body)
    status = 0

    async def receive() -> Message:
        if inbox:
            return inbox.pop()
        await asyncio.Event().wait()  # the client never goes away
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _load(
    app: ASGIApp, method: str, path: str, token: str, *, requests: int, concurrency: int
) -> Counter[int]:
    body = json.dumps(NEW_CUSTOMER).encode()
    statuses: Counter[int] = Counter()
    remaining = iter(range(requests))

    async def client() -> None:
        for _ in remaining:
            statuses[await _call(app, method, path, token, body)] += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


class _Lifespan:
    """Runs the app's startup and, on close, its shutdown, as a server would."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self._app(scope, self._inbox.get, self._outbox.put))
        await self._inbox.put({"type": "lifespan.startup"})
        started = await self._outbox.get()
        if started["type"] != "lifespan.startup.complete":
            raise SystemExit(f"the app did not start: {started.get('message', started)}")

    async def stop(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()
        if self._task is not None:
            await self._task


def profile_requests(
    settings: ApiSettings,
    token: str,
    *,
    path: str,
    method: str = GET,
    requests: int = 20_000,
    concurrency: int = 64,
    profile: bool = False,
    services: list[int] | None = None,
) -> Profile:
    """Call the app `requests` times (after as many to warm up) and measure the second half."""

    async def run() -> Profile:
        app = create_app(settings)
        lifespan = _Lifespan(app)
        await lifespan.start()
        try:
            await _load(app, method, path, token, requests=requests, concurrency=concurrency)
            pauses: list[tuple[int, float]] = []
            started: list[float] = []

            def collected(phase: str, info: dict[str, int]) -> None:
                if phase == "start":
                    started.append(time.perf_counter())
                elif started:
                    pauses.append((info["generation"], time.perf_counter() - started.pop()))

            profiler = cProfile.Profile() if profile else None
            gc.callbacks.append(collected)
            cpu, wall = time.process_time(), time.perf_counter()
            services_cpu = tree_cpu_seconds(services or [])
            if profiler is not None:
                profiler.enable()
            try:
                statuses = await _load(
                    app, method, path, token, requests=requests, concurrency=concurrency
                )
            finally:
                if profiler is not None:
                    profiler.disable()
                gc.callbacks.remove(collected)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            services_cpu = tree_cpu_seconds(services or []) - services_cpu
            modules = _by_module(profiler) if profiler is not None else []
            return Profile(
                requests,
                statuses,
                cpu,
                wall,
                pauses,
                modules,
                services_cpu_seconds=services_cpu if services else None,
            )
        finally:
            await lifespan.stop()

    return uvloop.run(run())


def report(profile: Profile, method: str) -> str:
    lines = [
        f"{method}: {profile.requests:,} requests in process, statuses {dict(profile.statuses)}",
        (
            f"CPU per request {profile.cpu_ms_per_request:.3f} ms "
            f"(wall {profile.wall_seconds / profile.requests * 1000:.3f} ms)"
            + (", slowed by the profiler" if profile.modules else "")
        ),
    ]
    if profile.services_cpu_seconds is not None:
        lines.append(
            "PostgreSQL and Redis CPU per request "
            f"{profile.services_cpu_seconds / profile.requests * 1000:.3f} ms"
        )
    for generation in (0, 1, 2):
        pauses = [seconds for g, seconds in profile.pauses if g == generation]
        if pauses:
            lines.append(
                f"collections of generation {generation}: {len(pauses)}, longest "
                f"{max(pauses) * 1000:.1f} ms, {sum(pauses) * 1000:.1f} ms in all"
            )
    if profile.modules:
        lines += ["", "| Module | Share of CPU (profiled) |", "| --- | ---: |"]
        lines += [f"| {name} | {share:.1%} |" for name, share in profile.modules]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.bench_profile", description=__doc__)
    parser.add_argument("--operation", choices=[GET, POST], default=GET)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="CPU by module (cProfile)")
    arguments = parser.parse_args(argv)
    if arguments.requests < 1 or arguments.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    directory = devservers.scratch_dir("billing-bench-profile-")
    try:
        with bench_stack(directory) as stack:
            token = stack.token("bench-profile", lifetime=timedelta(hours=2))
            settings = Settings.from_env(stack.api_env).for_api()
            path = "/v1/customers"
            if arguments.operation == GET:
                path += "/" + _seed_customer(stack.url, token)
            print(
                report(
                    profile_requests(
                        settings,
                        token,
                        path=path,
                        method=arguments.operation,
                        requests=arguments.requests,
                        concurrency=arguments.concurrency,
                        profile=arguments.profile,
                        services=database_and_cache_pids(stack),
                    ),
                    arguments.operation,
                )
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def _seed_customer(url: str, token: str) -> str:
    response = httpx.post(
        f"{url}/v1/customers",
        json=NEW_CUSTOMER,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["id"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
