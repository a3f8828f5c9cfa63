"""`python -m services.bench`: API latency and throughput, and worker renewals per second.

Everything runs on this machine's loopback: PostgreSQL, Redis, the API and the worker started
as in `services.local`, and the load generator in this process. Numbers are for comparing
changes on one machine, not for capacity planning.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import create_engine, text

from services.billing import devservers
from services.billing.config import DatabaseSettings
from services.local import load_manifest, local_stack, start_service

if TYPE_CHECKING:
    from services.local import LocalStack

# Each virtual client is its own principal (one tenant, many API clients), so the per-principal
# rate limit measures nothing here.
PRINCIPALS = 64
CUSTOMERS = 100
WARMUP_SECONDS = 2.0
NEW_CUSTOMER = {"email": "bench@example.com", "name": "Bench", "payment_method": "pm_card_visa"}


@dataclass(frozen=True)
class ApiResult:
    concurrency: int
    seconds: float
    latencies: dict[str, list[float]]
    errors: int

    @property
    def requests(self) -> int:
        return sum(len(samples) for samples in self.latencies.values())


@dataclass(frozen=True)
class WorkerResult:
    processes: int
    subscriptions: int
    # From the first invoice written to the last payment recorded, by the database's clock.
    busy_seconds: float
    wall_seconds: float


async def measure_api(stack: LocalStack, *, concurrency: int, seconds: float) -> ApiResult:
    tokens = [stack.token(f"bench-client-{index}") for index in range(PRINCIPALS)]
    keys = itertools.count()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=stack.url, limits=limits, timeout=30) as client:

        async def create_customer(token: str) -> httpx.Response:
            return await client.post(
                "/v1/customers",
                json={
                    "email": "bench@example.com",
                    "name": "Bench",
                    "payment_method": "pm_card_visa",
                },
                headers={
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": f"bench-{next(keys)}",
                },
            )

        customer_ids = [(await create_customer(tokens[0])).json()["id"] for _ in range(CUSTOMERS)]
        latencies: dict[str, list[float]] = {"GET /v1/customers/{id}": [], "POST /v1/customers": []}
        errors = 0
        measuring_from = time.perf_counter() + WARMUP_SECONDS
        deadline = measuring_from + seconds

        async def virtual_client(number: int) -> None:
            nonlocal errors
            token = tokens[number % PRINCIPALS]
            for request in itertools.count(number):
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                # One write for every four reads, roughly a billing dashboard's mix.
                if request % 5 == 0:
                    operation, response = "POST /v1/customers", await create_customer(token)
                else:
                    operation = "GET /v1/customers/{id}"
                    response = await client.get(
                        f"/v1/customers/{customer_ids[request % CUSTOMERS]}",
                        headers={"Authorization": f"Bearer {token}"},
                    )
                if started >= measuring_from:
                    latencies[operation].append(time.perf_counter() - started)
                    errors += response.status_code >= 400

        await asyncio.gather(*(virtual_client(number) for number in range(concurrency)))
    return ApiResult(concurrency, seconds, latencies, errors)


def seed_due_subscriptions(database: DatabaseSettings, count: int) -> None:
    engine = create_engine(database.url())
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                WITH plan AS (
                  INSERT INTO plans (id, name, amount, currency, interval, trial_days)
                  VALUES (gen_random_uuid(), 'Bench monthly', 1500, 'USD', 'month', 0)
                  RETURNING id
                ), customer AS (
                  INSERT INTO customers (id, email, name, payment_method, currency)
                  SELECT gen_random_uuid(), 'due-' || n || '@example.com', 'Due ' || n,
                         'pm_card_visa', 'USD'
                  FROM generate_series(1, :count) AS n
                  RETURNING id
                )
                INSERT INTO subscriptions (id, customer_id, plan_id, status, billing_anchor,
                                           current_period_start, current_period_end)
                SELECT gen_random_uuid(), customer.id, plan.id, 'active',
                       now() - interval '1 month 1 minute', now() - interval '1 month 1 minute',
                       now() - interval '1 minute'
                FROM customer CROSS JOIN plan
                """
            ),
            {"count": count},
        )
    engine.dispose()


def measure_worker(stack: LocalStack, *, processes: int, subscriptions: int) -> WorkerResult:
    database = DatabaseSettings.from_env(stack.worker_env)
    seed_due_subscriptions(database, subscriptions)
    worker = load_manifest("worker")
    started = time.perf_counter()
    workers = [
        start_service(
            worker,
            stack.worker_env,
            "--until-idle",
            "--poll-interval=0.1",
            "--batch-size=50",
            f"--heartbeat-file={devservers.scratch_dir('billing-bench-worker-')}/heartbeat",
            output=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    for process in workers:
        if process.wait(timeout=600) != 0:
            raise SystemExit(f"a worker exited with {process.returncode}")
    wall_seconds = time.perf_counter() - started
    engine = create_engine(database.url())
    with engine.connect() as connection:
        paid, busy_seconds = connection.execute(
            text(
                """
                SELECT (SELECT count(*) FROM invoices WHERE status = 'paid'),
                       extract(epoch FROM (SELECT max(created_at) FROM payments)
                                        - (SELECT min(created_at) FROM invoices))
                """
            )
        ).one()
    engine.dispose()
    if paid != subscriptions:
        raise SystemExit(f"expected {subscriptions} paid invoices, found {paid}")
    return WorkerResult(processes, subscriptions, float(busy_seconds), wall_seconds)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency(samples: list[float]) -> str:
    """p50 / p99 in milliseconds."""
    return f"{percentile(samples, 0.5) * 1000:.1f} / {percentile(samples, 0.99) * 1000:.1f} ms"


def report(api: ApiResult, worker: WorkerResult) -> str:
    everything = [sample for samples in api.latencies.values() for sample in samples]
    rows = [
        (
            "API throughput",
            f"{api.concurrency} concurrent clients, {api.seconds:.0f} s",
            f"{api.requests / api.seconds:.0f} req/s ({api.errors} errors)",
        ),
        ("API latency p50 / p99", "all requests", latency(everything)),
    ]
    rows += [
        (f"API latency, {operation}", f"{len(samples)} requests", latency(samples))
        for operation, samples in api.latencies.items()
    ]
    rows.append(
        (
            "Worker renewals",
            f"{worker.processes} workers, {worker.subscriptions} due subscriptions",
            (
                f"{worker.subscriptions / worker.busy_seconds:.0f} renewals/s, each renewed, "
                f"invoiced and charged ({worker.wall_seconds:.1f} s including process start)"
            ),
        )
    )
    lines = ["| Benchmark | Setting | Result |", "| --- | --- | --- |"]
    lines += [f"| {name} | {setting} | {result} |" for name, setting, result in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.bench", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="API load duration")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--subscriptions", type=int, default=2000)
    arguments = parser.parse_args(argv)
    directory = devservers.scratch_dir("billing-bench-")
    try:
        with (
            (directory / "services.log").open("wb") as log,
            local_stack(directory / "state", with_worker=False, output=log) as stack,
        ):
            api = asyncio.run(
                measure_api(stack, concurrency=arguments.concurrency, seconds=arguments.seconds)
            )
            worker = measure_worker(
                stack, processes=arguments.workers, subscriptions=arguments.subscriptions
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(report(api, worker))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
