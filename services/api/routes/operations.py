"""Health for the load balancer; readiness and metrics on the internal port (server.py)."""

import logging
import os
from typing import Any

import anyio
import redis.asyncio
import redis.exceptions
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from services.api.dependencies import runtime
from services.api.server import PROMETHEUS_MULTIPROC_VARIABLE

router = APIRouter(tags=["operations"])
logger = logging.getLogger(__name__)
READINESS_TIMEOUT_SECONDS = 2.0
REDIS_PINGS = 3
# The load balancer checks every few seconds with a timeout of its own (4-5 s in the plans).
HEALTH_TIMEOUT_SECONDS = 2.0


@router.get(
    "/health",
    responses={503: {"description": "The database does not answer"}},
)
async def health(request: Request) -> JSONResponse:
    """Serving, and the database answers: a task without its database is taken out of rotation.

    Redis is not checked: the API works without it (rate limits fail open, idempotency records
    are in PostgreSQL), so its outage must not empty the target group.
    """
    if await _database_ok(request, timeout=HEALTH_TIMEOUT_SECONDS):
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)


@router.get(
    "/ready", include_in_schema=False, responses={503: {"description": "A dependency is down"}}
)
async def ready(request: Request) -> JSONResponse:
    """The database and Redis answer, so requests can be served."""
    checks = {"database": await _database_ok(request), "redis": await _redis_ok(request)}
    healthy = all(checks.values())
    body: dict[str, Any] = {
        "status": "ready" if healthy else "unavailable",
        "checks": {name: "ok" if ok else "unreachable" for name, ok in checks.items()},
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """This process's metrics, or every server process's when several serve (server.py)."""
    if not os.environ.get(PROMETHEUS_MULTIPROC_VARIABLE):
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    # prometheus_client's multiprocess collector sums the processes' files
    # (https://prometheus.github.io/client_python/multiprocess/).
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _database_ok(request: Request, *, timeout: float = READINESS_TIMEOUT_SECONDS) -> bool:
    sessions = runtime(request).sessions

    def probe() -> None:
        with sessions() as session:
            session.execute(text("SELECT 1"))

    try:
        with anyio.fail_after(timeout):
            await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
    except (SQLAlchemyError, TimeoutError) as error:
        logger.warning("database not reachable", extra={"error": str(error)})
        return False
    return True


async def _redis_ok(request: Request) -> bool:
    cache: redis.asyncio.Redis = request.app.state.cache
    failure: Exception | None = None
    # Each ping has Redis's 100 ms budget; one slow answer on a busy host is not an outage.
    for _ in range(REDIS_PINGS):
        try:
            with anyio.fail_after(READINESS_TIMEOUT_SECONDS):
                await cache.ping()
        except (redis.exceptions.RedisError, TimeoutError) as error:
            failure = error
        else:
            return True
    logger.warning("redis not reachable", extra={"error": str(failure)})
    return False
