"""The API's HTTP server: the public port for the load balancer, an internal one for the rest.

`/ready` and `/metrics` answer only on the internal port (BILLING_INTERNAL_PORT), which the
load balancer never routes to, so the internet sees neither the dependencies' state nor the
metrics. Everything else answers only on the public port. Forwarded headers (X-Forwarded-For,
-Proto) are believed only from the load balancer's address ranges (BILLING_TRUSTED_PROXIES);
from anyone else they could forge the client address in the logs.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

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


logger = logging.getLogger("uvicorn.error")

# Linux spreads a port's connections over the sockets bound to it with SO_REUSEPORT; other
# systems accept the option but do not balance (https://lwn.net/Articles/542629/).
BALANCED_ACCEPT = sys.platform == "linux"


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def process_sockets(host: str, ports: list[int], processes: int) -> list[list[socket.socket]]:
    """Each process's listening sockets, one per port.

    On Linux each process has its own, bound with SO_REUSEPORT, and the kernel hands each new
    connection to one socket of the port's group by a hash of its addresses and ports: "a
    distinct listener socket for each thread ... provides improved load distribution as
    compared to ... multiple threads that compete to accept(2) from the same socket"
    (socket(7), SO_REUSEPORT). Only sockets of this effective user can join the group, so no
    other user's process can take a share of the port. gVisor, which runs Cloud Run's first
    generation, does the same: sockets bound with the option share a port and a hash of the
    4-tuple picks one (google/gvisor, pkg/tcpip/stack/transport_demuxer.go, multiPortEndpoint).
    Elsewhere, or where the option is refused, every process shares one socket per port.
    """
    if BALANCED_ACCEPT:
        slots: list[list[socket.socket]] = []
        try:
            first = [listening_socket(host, port, reuse_port=True) for port in ports]
            slots.append(first)
            # Port 0 asks for any free port: the others join the one the first was given.
            bound = [sock.getsockname()[1] for sock in first]
            slots += [
                [listening_socket(host, port, reuse_port=True) for port in bound]
                for _ in range(processes - 1)
            ]
        except OSError as error:
            for sock in (sock for slot in slots for sock in slot):
                sock.close()
            logger.warning("SO_REUSEPORT refused (%s); the processes share one socket", error)
        else:
            return slots
    shared = [listening_socket(host, port) for port in ports]
    return [shared] * processes


class BalancedMultiprocess(Multiprocess):
    """uvicorn's supervisor of server processes, each on its own listening sockets.

    Processes that share a listening socket race to accept, and uvloop accepts every waiting
    connection at each wake-up: measured here, one of two processes took 62 and 64 of a
    client's 64 connections, and that process's queue set the p99 latency. uvicorn's
    supervisor hands every process the same sockets (uvicorn/supervisors/multiprocess.py; a
    per-process option is proposed in https://github.com/Kludex/uvicorn/pull/2472), so the
    places that start a process are redone here to give each its slot's sockets. The
    supervisor keeps every slot's sockets open: connections the kernel hands to a process that
    died wait in its socket's queue for the replacement, which starts on the same sockets.
    """

    def __init__(self, config: uvicorn.Config, slots: list[list[socket.socket]]) -> None:
        super().__init__(config, slots[0])
        self._slots = slots
        self.processes_num = len(slots)

    def _start(self, slot: int) -> Process:
        process = Process(self.config, self._slots[slot])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start(slot) for slot in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        # uvicorn's own, but a replacement starts on the slot's sockets.
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or already gone
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # It failed before serving (the app or its settings), as every restart would.
                logger.error("Child process [%s] failed to start, stopping.", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info("Child process [%s] died", process.pid)
            self.processes[slot] = self._start(slot)

    def restart_all(self) -> None:
        # SIGHUP: uvicorn's own, each replacement ready on the slot's sockets before the old
        # process stops.
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    logger.error(
                        "Child process [%s] was not ready in time; restart aborted", new.pid
                    )
                return
            old.terminate()
            old.join()
            self.processes[slot] = new

    def handle_ttin(self) -> None:
        logger.info("Received SIGTTIN: the number of processes is fixed by --processes.")

    def handle_ttou(self) -> None:
        logger.info("Received SIGTTOU: the number of processes is fixed by --processes.")


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
    served by the same code). With several processes the sockets are bound here, each process's
    own on Linux (process_sockets), and uvicorn's supervisor runs the processes and replaces
    one that dies (BalancedMultiprocess); SIGTERM to this one stops them all, each draining
    its requests.
    """
    host, ports = settings.settings.bind_host, [settings.port, settings.internal_port]
    if processes == 1:
        sockets = [listening_socket(host, port) for port in ports]
        uvicorn.Server(server_config(factory, settings)).run(sockets=sockets)
        return
    slots = process_sockets(host, ports, processes)
    metrics_dir = tempfile.mkdtemp(prefix="billing-api-metrics-")
    os.environ[PROMETHEUS_MULTIPROC_VARIABLE] = metrics_dir
    try:
        BalancedMultiprocess(server_config(factory, settings, processes=processes), slots).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
