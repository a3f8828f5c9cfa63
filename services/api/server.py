"""The API's HTTP server: the public port for the load balancer, an internal one for the rest.

`/ready` and `/metrics` answer only on the internal port (BILLING_INTERNAL_PORT), which the
load balancer never routes to, so the internet sees neither the dependencies' state nor the
metrics. Everything else answers only on the public port. Forwarded headers (X-Forwarded-For,
-Proto) are believed only from the load balancer's address ranges (BILLING_TRUSTED_PROXIES);
from anyone else they could forge the client address in the logs.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import uvicorn

from services.api.errors import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from services.billing.config import ApiSettings

INTERNAL_PATHS = frozenset({"/ready", "/metrics"})
# ECS and Cloud Run give a task 30 s between SIGTERM and SIGKILL; in-flight requests get most.
GRACEFUL_SHUTDOWN_SECONDS = 25


class PortSplitMiddleware:
    """Serves INTERNAL_PATHS on the internal port only, and nothing else there."""

    def __init__(self, app: ASGIApp, *, internal_port: int) -> None:
        self.app = app
        self._internal_port = internal_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            on_internal_port = server is not None and server[1] == self._internal_port
            if (scope["path"] in INTERNAL_PATHS) != on_internal_port:
                response = error_response(404, "not_found", "Not Found")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def server_config(app: ASGIApp, settings: ApiSettings) -> uvicorn.Config:
    proxies = settings.trusted_proxies
    return uvicorn.Config(
        PortSplitMiddleware(app, internal_port=settings.internal_port),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Without configured ranges no forwarded header is believed: the client is the peer.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=",".join(proxies) if proxies else None,
        server_header=False,
    )


def serve(app: ASGIApp, settings: ApiSettings) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight requests."""
    host = settings.settings.bind_host
    sockets = [
        listening_socket(host, settings.port),
        listening_socket(host, settings.internal_port),
    ]
    uvicorn.Server(server_config(app, settings)).run(sockets=sockets)
