"""Builds the API application from its settings."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from services.api.dependencies import Runtime
from services.api.errors import install_error_handlers
from services.api.idempotency import AnswerCache, StoredResponse, replay
from services.api.middleware.context import RequestContextMiddleware
from services.api.middleware.limits import BodyLimitMiddleware
from services.api.openapi import install_openapi, operation_id
from services.api.ratelimit import RateLimit, RateLimiter
from services.api.routes import (
    customers,
    invoices,
    operations,
    payments,
    plans,
    subscriptions,
    webhooks,
)
from services.billing.cache import CircuitBreaker, async_client, blocking_client
from services.billing.clock import Clock, system_clock
from services.billing.db import create_database_engine, session_factory
from services.billing.gateway import PaymentGateway, build_gateway

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from services.billing.config import ApiSettings


def create_app(
    settings: ApiSettings,
    *,
    gateway: PaymentGateway | None = None,
    clock: Clock = system_clock,
) -> FastAPI:
    cache_settings = settings.settings.cache
    engine = create_database_engine(settings.settings.database)
    cache = async_client(cache_settings)
    # The simulator gateway runs in handler threads, so it gets a blocking client of its own.
    gateway_cache = blocking_client(cache_settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Runs after uvicorn has drained in-flight requests on SIGTERM.
        await cache.aclose()
        gateway_cache.close()
        engine.dispose()

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
    app.state.runtime = Runtime(
        sessions=session_factory(engine),
        gateway=gateway or build_gateway(settings.settings.gateway, gateway_cache),
        clock=clock,
        webhook_secret=settings.settings.gateway.stripe_webhook_secret,
        jwt=settings.jwt,
        rate_limiter=RateLimiter(
            cache, breaker, RateLimit(requests=settings.rate_limit_per_minute)
        ),
    )
    install_error_handlers(app)
    app.add_exception_handler(StoredResponse, replay)
    for module in (customers, plans, subscriptions, invoices, payments, webhooks, operations):
        app.include_router(module.router)
    # add_middleware wraps: the last added runs first.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app
