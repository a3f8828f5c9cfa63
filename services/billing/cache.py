"""Redis clients for the configured cache (ElastiCache / Memorystore, or a local server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
import redis.asyncio

if TYPE_CHECKING:
    from services.billing.config import CacheSettings

TIMEOUT_SECONDS = 5.0
# Idle pooled connections are checked this often, so a failover does not surface as an error.
HEALTH_CHECK_SECONDS = 30


def blocking_client(cache: CacheSettings) -> redis.Redis:
    return redis.Redis(
        host=cache.host,
        port=cache.port,
        password=cache.auth_token or None,
        ssl=cache.tls,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        health_check_interval=HEALTH_CHECK_SECONDS,
    )


def async_client(cache: CacheSettings) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        host=cache.host,
        port=cache.port,
        password=cache.auth_token or None,
        ssl=cache.tls,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        health_check_interval=HEALTH_CHECK_SECONDS,
    )
