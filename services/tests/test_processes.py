"""The services as their containers run them: `python -m ...`, configured by environment only."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from services import devservers
from services.billing.gateway import SimulatorGateway
from services.billing.gateway.simulator import SLOW_CARD
from services.billing.models import Invoice, InvoiceStatus
from services.tests.conftest import bearer_token, subprocess_env
from services.tests.factories import seed_due_subscriptions
from services.tests.processes import (
    REPOSITORY_ROOT,
    serving_pids,
    start_service,
    wait_for,
    wait_until_serving,
)

pytestmark = pytest.mark.slow


@dataclass
class RunningApi:
    process: subprocess.Popen[bytes]
    url: str
    internal_url: str
    log: Path


def start_api(service_env: dict[str, str], tmp_path: Path, processes: int) -> RunningApi:
    """`python -m services.api --processes=N` on free ports, as the container runs it."""
    port, internal_port = devservers.free_port(), devservers.free_port()
    env = subprocess_env(
        service_env,
        BILLING_PORT=str(port),
        BILLING_HOST="127.0.0.1",
        BILLING_INTERNAL_PORT=str(internal_port),
    )
    log = tmp_path / "api.log"
    api = start_service("services.api", env, f"--processes={processes}", log=log)
    return RunningApi(api, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal_port}", log)


# One server process, and several as the container runs them (its manifest's --processes):
# SIGTERM to the supervisor reaches each process, which drains its requests.
@pytest.mark.parametrize("processes", [1, 2])
def test_api_finishes_in_flight_requests_on_sigterm(
    service_env: dict[str, str],
    simulator: SimulatorGateway,
    db: Session,
    tmp_path: Path,
    processes: int,
) -> None:
    del db  # For the clean slate.
    running = start_api(service_env, tmp_path, processes)
    api, url, log = running.process, running.url, running.log
    try:
        wait_until_serving(url, api, log)
        assert httpx.get(f"{running.internal_url}/ready").status_code == 200
        headers = {"Authorization": f"Bearer {bearer_token()}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:

            def post(path: str, body: object = None) -> dict[str, object]:
                key = {"Idempotency-Key": f"{path}-{datetime.now(UTC).timestamp()}"}
                response = client.post(path, json=body, headers=key)
                assert response.status_code < 300, response.text
                return dict(response.json())

            customer = post(
                "/v1/customers",
                {"email": "slow@example.com", "name": "Slow", "payment_method": SLOW_CARD},
            )
            plan = post(
                "/v1/plans", {"name": "P", "amount": 500, "currency": "USD", "interval": "month"}
            )
            subscription = post(
                "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
            )
            invoice = client.get(
                "/v1/invoices", params={"subscription_id": str(subscription["id"])}
            ).json()["data"][0]
            outcome: list[httpx.Response] = []
            paying = threading.Thread(
                target=lambda: outcome.append(
                    client.post(
                        f"/v1/invoices/{invoice['id']}/pay", headers={"Idempotency-Key": "pay-slow"}
                    )
                )
            )
            paying.start()
            wait_for(
                lambda: simulator.charges_in_flight() == 1, timeout=30, what="the charge to start"
            )
            api.send_signal(signal.SIGTERM)
            paying.join(timeout=30)
        # uvicorn drains, shuts the app down, then re-raises the signal it caught.
        assert api.wait(timeout=30) in {0, -signal.SIGTERM}
    finally:
        if api.poll() is None:
            api.terminate()
            api.wait(timeout=60)
    [response] = outcome
    assert response.status_code == 200
    assert response.json()["outcome"] == "paid"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["message"] == "request"]
    assert any(line["path"].endswith("/pay") and line["status"] == 200 for line in requests)
    assert all(line.get("request_id") for line in requests)
    [(paid_at, server)] = [
        (index, line["pid"])
        for index, line in enumerate(lines)
        if line.get("path", "").endswith("/pay")
    ]
    # The paid request's log line comes before its server process finished shutting down.
    shutdowns = [
        index
        for index, line in enumerate(lines)
        if line["message"] == "Application shutdown complete." and line["pid"] == server
    ]
    assert len(shutdowns) == 1
    assert shutdowns[0] > paid_at


def test_metrics_add_up_every_server_process(
    service_env: dict[str, str], db: Session, tmp_path: Path
) -> None:
    del db  # For the clean slate.
    running = start_api(service_env, tmp_path, 3)
    api, url, log = running.process, running.url, running.log
    try:
        wait_until_serving(url, api, log)
        headers = {"Authorization": f"Bearer {bearer_token()}"}
        servers = set()
        # A new connection each: the kernel hands them to the processes in turn of their accept.
        for _ in range(60):
            response = httpx.get(f"{url}/v1/customers", headers=headers)
            assert response.status_code == 200
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("path") == "/v1/customers":
                servers.add(json.loads(line)["pid"])
        text = httpx.get(f"{running.internal_url}/metrics").text
    finally:
        api.terminate()
        api.wait(timeout=60)
    assert len(servers) > 1, "one process served every request; nothing to add up"
    counted = [
        line
        for line in text.splitlines()
        if line.startswith('billing_http_requests_total{method="GET",route="/v1/customers"')
    ]
    assert [float(line.rsplit(" ", 1)[1]) for line in counted] == [60.0]


def _health_served_by(url: str, log: Path, connections: int) -> list[int]:
    """Open `connections` connections at once, then GET /health once on each; the server
    process that answered each, from the access log."""
    host, port = url.removeprefix("http://").split(":")
    before = len(log.read_text().splitlines())
    # All connected before any request, as a load balancer's or wrk's pool opens them: where
    # the kernel hands them is then all that decides which process serves each.
    opened = [socket.create_connection((host, int(port)), timeout=10) for _ in range(connections)]
    try:
        for sock in opened:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\n\r\n")
        for sock in opened:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for sock in opened:
            sock.close()

    def served() -> list[int]:
        lines = log.read_text().splitlines()[before:]
        records = [json.loads(line) for line in lines if line.startswith("{")]
        return [record["pid"] for record in records if record.get("path") == "/health"]

    # Each process writes its line once the answer is sent.
    wait_for(lambda: len(served()) >= connections, timeout=30, what="the access log")
    return served()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_connections_spread_over_the_server_processes(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    # Processes sharing one listening socket race to accept, and the first awake takes every
    # connection waiting: 62 and 64 of 64 were seen. Each process on its own SO_REUSEPORT
    # socket gets a share by the kernel's hash (services/api/server.py, process_sockets).
    running = start_api(service_env, tmp_path, 2)
    api, url, log = running.process, running.url, running.log
    try:
        wait_until_serving(url, api, log)
        wait_for(lambda: len(serving_pids(log)) == 2, timeout=30, what="both processes")
        served = _health_served_by(url, log, 64)
        shares = sorted(served.count(pid) for pid in set(served))
        # An even hash gives each 32 +/- 4; 16 is four standard deviations off.
        assert len(shares) == 2
        assert shares[0] >= 16, shares

        # A process that dies is replaced on its own sockets: the connections the kernel hands
        # them wait for the replacement, and again both processes serve.
        victim = max(set(served), key=served.count)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(serving_pids(log) - {victim}) == 2, timeout=60, what="the replacement")
        served = _health_served_by(url, log, 64)
        assert victim not in served
        assert len(set(served)) == 2

        # SIGHUP restarts each process, the new one ready on the slot's sockets before the old
        # one stops (uvicorn's restart): then only new processes serve, still both.
        before = serving_pids(log)
        api.send_signal(signal.SIGHUP)
        wait_for(lambda: len(serving_pids(log) - before) == 2, timeout=60, what="the restart")
        wait_for(lambda: not any(_alive(pid) for pid in before), timeout=60, what="old ones")
        served = _health_served_by(url, log, 64)
        assert len(set(served)) == 2
        assert not set(served) & before
    finally:
        api.terminate()
        api.wait(timeout=60)


def test_worker_finishes_the_charge_in_hand_on_sigterm(
    service_env: dict[str, str], simulator: SimulatorGateway, db: Session, tmp_path: Path
) -> None:
    seed_due_subscriptions(db, 3, now=datetime.now(UTC), payment_method=SLOW_CARD)
    log = tmp_path / "worker.log"
    worker = start_service(
        "services.worker",
        subprocess_env(service_env),
        f"--heartbeat-file={tmp_path / 'heartbeat'}",
        "--charge-concurrency=2",
        log=log,
    )
    try:
        wait_for(lambda: simulator.charges_in_flight() == 2, timeout=60, what="charges to start")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    db.rollback()
    statuses = sorted(invoice.status for invoice in db.scalars(select(Invoice)))
    # All three renewed; the two charges under way finished; no new one was started.
    assert statuses == [InvoiceStatus.OPEN, InvoiceStatus.PAID, InvoiceStatus.PAID]
    assert len(simulator.charges()) == 2
    health = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.worker.healthcheck",
            f"--heartbeat-file={tmp_path / 'heartbeat'}",
        ],
        cwd=REPOSITORY_ROOT,
        check=False,
    )
    assert health.returncode == 0


@pytest.mark.parametrize("module", ["services.api", "services.worker"])
def test_a_missing_variable_stops_startup_with_its_name(
    module: str, service_env: dict[str, str]
) -> None:
    env = subprocess_env(service_env)
    del env["DATABASE_HOST"]
    result = subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPOSITORY_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "DATABASE_HOST is required" in result.stderr
