"""Request ids, one JSON access-log line per request, and the HTTP metrics."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders

from services.billing import logs

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from services.api.ratelimit import Quota

logger = logging.getLogger("services.api.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept only if it is short and plain, so it cannot forge log lines.
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

http_requests = Counter(
    "billing_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
http_latency = Histogram(
    "billing_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def new_request_id() -> str:
    """32 hex digits, as a uuid4's: unique per request, not a secret, so from the process's own
    generator rather than os.urandom, a system call per request (uuid4 was 2% of a GET's CPU).
    The random module seeds it from os.urandom at import and again in a forked child
    (CPython's Lib/random.py, os.register_at_fork), so no two processes share a sequence."""
    return f"{random.getrandbits(128):032x}"


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = offered if _ACCEPTABLE_REQUEST_ID.match(offered) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = logs.request_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                # Set by the rate limit dependency for requests it counted.
                quota: Quota | None = scope["state"].get("quota")
                if quota is not None:
                    for name, value in quota.headers().items():
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            http_requests.labels(scope["method"], template, str(status)).inc()
            http_latency.labels(scope["method"], template).observe(elapsed)
            principal = scope["state"].get("principal")
            logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    # The peer, or the client a trusted load balancer forwarded for.
                    "client": (scope.get("client") or ("",))[0],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "tenant": principal.tenant_id if principal else None,
                    "subject": principal.subject if principal else None,
                },
            )
            logs.request_id.reset(token)
