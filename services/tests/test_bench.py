"""The benchmark's parts: the floor answers as the API does, wrk's script drives both (a new
idempotency key per POST), and CPU time is counted per process tree."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import func, select

from services import devservers
from services.bench_api import GET as GET_ROUTE
from services.bench_api import (
    LISTEN,
    NEW_CUSTOMER,
    TARGETS,
    WRK_SCRIPT,
    CpuSeconds,
    LoadResult,
    Setup,
    round_outcomes,
    run_wrk,
    socket_inodes,
    targets_table,
    tree_cpu_seconds,
)
from services.bench_api import POST as POST_ROUTE
from services.bench_profile import POST, profile_requests
from services.bench_profile import main as profile_main
from services.billing.models import Customer
from services.tests.conftest import BillingClient, Servers, bearer_token, subprocess_env
from services.tests.factories import create_customer
from services.tests.processes import start_service, wait_for, wait_until_serving

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.orm import Session

    from services.billing.config import Settings

pytestmark = pytest.mark.slow


@pytest.fixture
def floor(
    service_env: dict[str, str], servers: Servers, migrated: None, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    """The floor's URL and its supervisor's pid, with 2 server processes."""
    del migrated
    port = devservers.free_port()
    env = subprocess_env(
        service_env,
        BILLING_PORT=str(port),
        BILLING_HOST="127.0.0.1",
        BILLING_INTERNAL_PORT=str(devservers.free_port()),
        DATABASE_USER=servers.postgres.admin_user,
    )
    log = tmp_path / "floor.log"
    process = start_service("services.bench_floor", env, "--processes=2", log=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process, log, timeout=60)
        # The floor logs nothing; a process's own socket listens once its server has started.
        wait_for(
            lambda: len(socket_inodes(port, LISTEN)) == 2, timeout=60, what="both floor processes"
        )
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _same_customer(api: dict[str, object], floor: dict[str, object]) -> None:
    assert datetime.fromisoformat(str(api.pop("created_at"))) == datetime.fromisoformat(
        str(floor.pop("created_at"))
    )
    assert api == floor


def test_the_floor_reads_and_writes_customers_as_the_api_does(
    client: BillingClient, floor: tuple[str, int]
) -> None:
    floor_url, _ = floor
    created = client.post_new("/v1/customers", json=NEW_CUSTOMER)
    assert created.status_code == 201
    headers = {"Authorization": f"Bearer {bearer_token()}"}
    customer_id = created.json()["id"]
    read = httpx.get(f"{floor_url}/v1/customers/{customer_id}", headers=headers)
    assert read.status_code == 200
    _same_customer(created.json(), read.json())
    # Only with a valid token, and only the token's tenant's rows.
    assert httpx.get(f"{floor_url}/v1/customers/{customer_id}").status_code == 401
    other_tenant = {"Authorization": f"Bearer {bearer_token('merchant-2')}"}
    assert (
        httpx.get(f"{floor_url}/v1/customers/{customer_id}", headers=other_tenant).status_code
        == 404
    )
    written = httpx.post(f"{floor_url}/v1/customers", json=NEW_CUSTOMER, headers=headers)
    assert written.status_code == 201
    api = client.get(f"/v1/customers/{written.json()['id']}")
    assert api.status_code == 200
    _same_customer(api.json(), written.json())


def test_wrk_sends_a_new_idempotency_key_with_each_post(
    client: BillingClient, db: Session, tmp_path: Path, api_url: str
) -> None:
    script = tmp_path / "load.lua"
    script.write_text(WRK_SCRIPT)
    paths = tmp_path / "paths.txt"
    customer = client.post_new("/v1/customers", json=NEW_CUSTOMER).json()
    paths.write_text(f"/v1/customers/{customer['id']}\n")
    env = {
        "BENCH_TOKEN": bearer_token(),
        "BENCH_PATHS": str(paths),
        "BENCH_BODY": json.dumps(NEW_CUSTOMER),
        "BENCH_RUN": uuid.uuid4().hex,
    }
    setup = Setup(connections=4, threads=2, seconds=1, processes=1)
    reads, read_cpu, _ = run_wrk(
        api_url, script, {**env, "BENCH_OPERATION": "GET"}, setup, 1, os.getpid(), []
    )
    assert reads["requests"] > 0
    assert reads["errors"] == 0
    # The API runs in this process (a thread): its CPU time is this process's.
    assert read_cpu.server > 0
    assert read_cpu.load_generator > 0
    writes, _, _ = run_wrk(
        api_url, script, {**env, "BENCH_OPERATION": "POST"}, setup, 1, os.getpid(), []
    )
    assert writes["errors"] == 0
    # Every POST created a customer: no key was sent twice (a replay creates none). wrk counts
    # the answers it waited for; those in flight at the end were still served.
    created = db.scalar(select(func.count()).select_from(Customer)) or 0
    assert 1 + writes["requests"] <= created <= 1 + writes["requests"] + setup.connections


def test_the_report_counts_each_server_processs_share_of_wrks_connections(
    floor: tuple[str, int], tmp_path: Path
) -> None:
    url, pid = floor
    script = tmp_path / "load.lua"
    script.write_text(WRK_SCRIPT)
    paths = tmp_path / "paths.txt"
    paths.write_text(f"/v1/customers/{uuid.uuid4()}\n")  # 404s: the share is what counts
    env = {
        "BENCH_TOKEN": bearer_token(),
        "BENCH_PATHS": str(paths),
        "BENCH_BODY": json.dumps(NEW_CUSTOMER),
        "BENCH_RUN": uuid.uuid4().hex,
        "BENCH_OPERATION": "GET",
    }
    setup = Setup(connections=16, threads=1, seconds=1, processes=2)
    _, _, connections = run_wrk(url, script, env, setup, 1, pid, [])
    # Both server processes, under the supervisor, and every connection counted once.
    assert len(connections) == 2
    assert sum(connections) == setup.connections


def test_cpu_time_is_counted_over_a_process_tree() -> None:
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    parent = subprocess.Popen(
        ["sh", "-c", f"python3 -c '{busy}' & wait"], stdout=subprocess.DEVNULL
    )
    seconds = 0.0
    while parent.poll() is None:
        seconds = max(seconds, tree_cpu_seconds([parent.pid]))
    # The shell itself spins nothing: the time is its child's.
    assert seconds >= 0.2


def test_the_in_process_profile_counts_each_request_and_names_where_cpu_went(
    client: BillingClient, settings: Settings
) -> None:
    customer = create_customer(client)
    read = profile_requests(
        settings.for_api(),
        bearer_token(scopes="read"),
        path=f"/v1/customers/{customer['id']}",
        requests=300,
        concurrency=8,
        profile=True,
    )
    assert dict(read.statuses) == {200: 300}
    assert read.cpu_seconds > 0
    shares = dict(read.modules)
    # The row comes from PostgreSQL through psycopg; the fast path is the project's own code.
    assert shares["psycopg"] > 0
    assert shares["services/api/fast.py"] > 0
    assert 0 < sum(shares.values()) <= 1.0 + 1e-9
    write = profile_requests(
        settings.for_api(), bearer_token(), path="/v1/customers", method=POST, requests=50
    )
    # A new idempotency key each: every POST made a customer.
    assert dict(write.statuses) == {201: 50}
    assert write.modules == []


def test_the_profile_refuses_an_empty_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        profile_main(["--requests", "0"])
    assert refused.value.code == 2
    assert "--requests and --concurrency must be at least 1" in capsys.readouterr().err


def _result(operation: str, server: str, per_second: float, p99_ms: float) -> LoadResult:
    cpu = CpuSeconds(server=1.0, load_generator=0.1, database_and_cache=0.5, machine=2.0, wall=1.0)
    return LoadResult(
        server=server,
        operation=operation,
        requests=int(per_second),
        seconds=1.0,
        errors=0,
        p50_ms=p99_ms / 2,
        p99_ms=p99_ms,
        cpu=cpu,
        connections=(32, 32),
        load_average=(1.0, 1.0),
    )


def test_the_report_counts_the_rounds_that_met_each_target() -> None:
    results = []
    # (GET floor, GET API, POST API) per round: requests/s and p99.
    rounds = [
        ((5000, 25.0), (3000, 40.0), (1300, 90.0)),  # GET met: 60%, 40 ms, 1.6x; POST met
        ((5000, 20.0), (3000, 45.0), (1200, 105.0)),  # GET over 2x the floor's; POST over 100
        ((5000, 30.0), (2000, 45.0), (1250, 99.9)),  # GET under half the floor's; POST met
    ]
    for get_floor, get_api, post_api in rounds:
        results += [
            _result(GET_ROUTE, "floor", *get_floor),
            _result(GET_ROUTE, "API", *get_api),
            _result(POST_ROUTE, "floor", 4000, 30.0),
            _result(POST_ROUTE, "API", *post_api),
        ]
    assert [o.meets(TARGETS[GET_ROUTE]) for o in round_outcomes(results, GET_ROUTE)] == [
        True,
        False,
        False,
    ]
    get_row, post_row = targets_table(results)[2:]
    assert "| 1 of 3 |" in get_row
    assert "| median 60%, 40% to 60% |" in get_row
    assert "| median 1.6x, 1.5x to 2.2x |" in get_row
    assert "| 2 of 3 |" in post_row
    assert "| median 99.9 ms, 90.0 ms to 105.0 ms |" in post_row


def test_the_api_benchmark_runs_end_to_end_and_says_how_far_it_got() -> None:
    # The whole of `python -m services.bench_api`, briefly: its own local stack, the floor,
    # wrk, the report on stdout and a line per run on stderr while it runs.
    ran = subprocess.run(
        [sys.executable, "-m", "services.bench_api", "--rounds", "1", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    progress = ran.stderr.splitlines()
    assert progress[0] == "API beside its floor: 4 wrk runs, about 12 s"
    runs = [line for line in progress if re.match(r"  \d/4 (GET|POST) .*, (floor|API): ", line)]
    assert [line.split(",")[1].split(":")[0].strip() for line in runs] == [
        "floor",
        "API",
        "floor",
        "API",
    ]
    rows = [line for line in ran.stdout.splitlines() if line.startswith(("| GET", "| POST"))]
    # Four runs, and each operation judged against its target.
    assert len(rows) == 4 + 2 + 4
    assert "Rounds that met it" in ran.stdout


@pytest.mark.parametrize(
    ("module", "arguments", "message"),
    [
        ("services.bench_api", ["--rounds", "0"], "argument --rounds: must be above 0, not 0"),
        ("services.bench_api", ["--seconds", "-1"], "argument --seconds: must be above 0"),
        ("services.bench", ["--workers", "0"], "argument --workers: must be above 0, not 0"),
        ("services.bench", ["--charges", "x"], "argument --charges: invalid int value: 'x'"),
    ],
)
def test_the_benchmarks_refuse_counts_below_one(
    module: str, arguments: list[str], message: str
) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 2
    assert message in ran.stderr
    assert "Traceback" not in ran.stderr
