"""Builds the API application from its settings."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from services.api.dependencies import Runtime
from services.api.errors import install_error_handlers
from services.api.fast import FastPath, served_routes
from services.api.fast_writes import FastWrites, served_writes
from services.api.idempotency import AnswerCache, StoredResponse, replay
from services.api.middleware.context import RequestContextMiddleware
from services.api.middleware.limits import BodyLimitMiddleware
from services.api.openapi import install_openapi, operation_id
from services.api.ratelimit import RateLimit, RateLimiter
from services.api.reads import RowReader
from services.api.routes import (
    customers,
    invoices,
    operations,
    payments,
    plans,
    subscriptions,
    webhooks,
)
from services.api.security import TokenVerifier
from services.api.writes import IdempotentWrites
from services.billing import logs
from services.billing.cache import CircuitBreaker, async_client, blocking_client
from services.billing.clock import Clock, system_clock
from services.billing.db import (
    async_session_factory,
    create_async_database_engine,
    create_database_engine,
    session_factory,
)
from services.billing.gateway import PaymentGateway, build_gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from services.billing.config import ApiSettings


# PostgreSQL connections per server process (one per task: services/api/manifest.toml), 31 in all:
# writes hold theirs from the idempotency claim to the commit, across the gateway call; those
# on the event loop (POST /v1/customers) take IDEMPOTENT_WRITE_CONNECTIONS (services/api/
# writes.py), those in worker threads WRITE_CONNECTIONS (with fewer, anyio's 40 threads wait on
# the pool and the slowest wait seconds); single rows take READ_CONNECTIONS (services/api/
# reads.py), lists and the other reads the rest. At each environment's largest task count that
# stays well under its instance's max_connections.
WRITE_CONNECTIONS = 8
LIST_CONNECTIONS = 5


def create_app(
    settings: ApiSettings,
    *,
    gateway: PaymentGateway | None = None,
    clock: Clock = system_clock,
) -> FastAPI:
    cache_settings = settings.settings.cache
    # Writes run in worker threads on psycopg's blocking connections (they call the gateway,
    # which blocks); reads on its asyncio ones, on the event loop.
    engine = create_database_engine(
        settings.settings.database, pool_size=WRITE_CONNECTIONS, overflow=0, pre_ping=False
    )
    read_engine = create_async_database_engine(
        settings.settings.database, pool_size=LIST_CONNECTIONS
    )
    rows = RowReader(settings.settings.database)
    writes = IdempotentWrites(settings.settings.database)
    cache = async_client(cache_settings)
    # The simulator gateway runs in handler threads, so it gets a blocking client of its own.
    gateway_cache = blocking_client(cache_settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await rows.open()
        await writes.open()
        # What the process holds from here to its end (modules, the app, pools) is moved out of
        # the collector's sight (https://docs.python.org/3/library/gc.html#gc.freeze): a full
        # collection traversed all of it, 270,000 objects, stalling every request in the process
        # for up to 165 ms; the requests' own garbage is collected as before.
        gc.collect()
        gc.freeze()
        yield
        # Runs after uvicorn has drained in-flight requests on SIGTERM; the process may end by
        # that signal, re-raised, before any exit handler runs.
        logs.write_lines_at_once()
        await writes.close()
        await rows.close()
        await cache.aclose()
        gateway_cache.close()
        engine.dispose()
        await read_engine.dispose()

    app = FastAPI(
        title="Billing API",
        version="1.0.0",
        summary="Customers, plans, subscriptions, invoices and payments; amounts in minor units.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    install_openapi(app)
    # One breaker for the process's Redis: when it is down, every caller skips it at once.
    breaker = CircuitBreaker()
    app.state.cache = cache
    app.state.answers = AnswerCache(cache, breaker)
    app.state.writes = writes
    app.state.runtime = Runtime(
        sessions=session_factory(engine),
        reads=async_session_factory(read_engine),
        rows=rows,
        gateway=gateway or build_gateway(settings.settings.gateway, gateway_cache),
        clock=clock,
        webhook_secret=settings.settings.gateway.stripe_webhook_secret,
        jwt=settings.jwt,
        tokens=TokenVerifier(settings.jwt),
        rate_limiter=RateLimiter(
            cache, breaker, RateLimit(requests=settings.rate_limit_per_minute)
        ),
    )
    install_error_handlers(app)
    app.add_exception_handler(StoredResponse, replay)
    routers = [m.router for m in (customers, plans, subscriptions, invoices, payments, webhooks)]
    for router in [*routers, operations.router]:
        app.include_router(router)
    # add_middleware wraps: the last added runs first.
    routes = [route for router in routers for route in router.routes]
    app.add_middleware(FastWrites, runtime=app.state.runtime, routes=served_writes(routes))
    app.add_middleware(FastPath, runtime=app.state.runtime, routes=served_routes(routes))
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app
