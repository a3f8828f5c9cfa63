"""Liveness, readiness and metrics for the load balancer, the orchestrator and Prometheus."""

import logging
from typing import Any

import anyio
import redis.asyncio
import redis.exceptions
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from services.api.dependencies import runtime

router = APIRouter(tags=["operations"])
logger = logging.getLogger(__name__)
READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and serving; says nothing about its dependencies."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "A dependency is unreachable"}})
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
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _database_ok(request: Request) -> bool:
    sessions = runtime(request).sessions

    def probe() -> None:
        with sessions() as session:
            session.execute(text("SELECT 1"))

    try:
        with anyio.fail_after(READINESS_TIMEOUT_SECONDS):
            await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
    except (SQLAlchemyError, TimeoutError) as error:
        logger.warning("database not reachable", extra={"error": str(error)})
        return False
    return True


async def _redis_ok(request: Request) -> bool:
    cache: redis.asyncio.Redis = request.app.state.cache
    try:
        with anyio.fail_after(READINESS_TIMEOUT_SECONDS):
            await cache.ping()
    except (redis.exceptions.RedisError, TimeoutError) as error:
        logger.warning("redis not reachable", extra={"error": str(error)})
        return False
    return True
