"""The API's HTTP server: the public port for the load balancer, an internal one for the rest.

`/ready` and `/metrics` answer only on the internal port (BILLING_INTERNAL_PORT), which the
load balancer never routes to, so the internet sees neither the dependencies' state nor the
metrics. Everything else answers only on the public port. Forwarded headers (X-Forwarded-For,
-Proto) are believed only from the load balancer's address ranges (BILLING_TRUSTED_PROXIES);
from anyone else they could forge the client address in the logs.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.supervisors import Multiprocess

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


# Where prometheus_client keeps each process's metrics when several serve: it reads the variable
# when imported, so it must be set before the server processes start
# (https://prometheus.github.io/client_python/multiprocess/).
PROMETHEUS_MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Imported by each server process, which builds its own app (its own pools and connections).
APP_FACTORY = "services.api.__main__:application"


def server_config(
    app: ASGIApp | str, settings: ApiSettings, *, processes: int = 1
) -> uvicorn.Config:
    """The server's settings; ``app`` is an app, or the import string of a factory of one."""
    proxies = settings.trusted_proxies
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=processes,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Without configured ranges no forwarded header is believed: the client is the peer.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=",".join(proxies) if proxies else None,
        server_header=False,
    )


def serve(settings: ApiSettings, *, processes: int = 1, factory: str = APP_FACTORY) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight requests.

    ``factory`` names the function that builds each process's app (the benchmark's floor is
    served by the same code). With several processes the sockets are bound here once and each
    process accepts on them (uvicorn's supervisor, which also replaces a process that dies);
    SIGTERM to this one stops them all, each draining its requests.
    """
    host = settings.settings.bind_host
    sockets = [
        listening_socket(host, settings.port),
        listening_socket(host, settings.internal_port),
    ]
    if processes == 1:
        uvicorn.Server(server_config(factory, settings)).run(sockets=sockets)
        return
    metrics_dir = tempfile.mkdtemp(prefix="billing-api-metrics-")
    os.environ[PROMETHEUS_MULTIPROC_VARIABLE] = metrics_dir
    try:
        Multiprocess(server_config(factory, settings, processes=processes), sockets).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
