"""`python -m services.bench`: the API beside its floor, and worker renewals per second.

Everything runs on this machine's loopback: PostgreSQL, Redis, the API and the worker started
as in `services.local`; the API's load generator is wrk in its own process (services/bench_api.py).
Numbers are for comparing changes on one machine, not for capacity planning.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

from services import bench_api, devservers
from services.billing.config import DatabaseSettings
from services.billing.gateway.simulator import REAL_GATEWAY_CARD
from services.local import load_manifest, start_service

if TYPE_CHECKING:
    from services.local import LocalStack


@dataclass(frozen=True)
class WorkerResult:
    processes: int
    subscriptions: int
    batch_size: int
    # From the first invoice written to the last, by the database's clock.
    renewing_seconds: float
    # From the first charge claimed to the last invoice paid.
    charging_seconds: float
    wall_seconds: float


@dataclass(frozen=True)
class ChargingResult:
    invoices: int
    concurrency: int
    charging_seconds: float
    wall_seconds: float


# The tenant the worker benchmarks' rows belong to.
BENCH_TENANT = "bench-merchant"


def seed_due_subscriptions(
    database: DatabaseSettings, count: int, *, plan_name: str, payment_method: str
) -> None:
    engine = create_engine(database.url())
    with engine.begin() as connection:
        # Row-level security: this connection writes for every tenant, as the worker does.
        connection.execute(text("SELECT set_config('billing.all_tenants', 'on', true)"))
        connection.execute(
            text(
                """
                WITH plan AS (
                  INSERT INTO plans (id, tenant_id, name, amount, currency, interval, trial_days)
                  VALUES (gen_random_uuid(), :tenant, :plan_name, 1500, 'USD', 'month', 0)
                  RETURNING id
                ), customer AS (
                  INSERT INTO customers (id, tenant_id, email, name, payment_method, currency)
                  SELECT gen_random_uuid(), :tenant, 'due-' || n || '@example.com', 'Due ' || n,
                         :payment_method, 'USD'
                  FROM generate_series(1, :count) AS n
                  RETURNING id
                )
                INSERT INTO subscriptions (id, tenant_id, customer_id, plan_id, status,
                                           billing_anchor, current_period_start,
                                           current_period_end)
                SELECT gen_random_uuid(), :tenant, customer.id, plan.id, 'active',
                       now() - interval '1 month 1 minute', now() - interval '1 month 1 minute',
                       now() - interval '1 minute'
                FROM customer CROSS JOIN plan
                """
            ),
            {
                "count": count,
                "tenant": BENCH_TENANT,
                "plan_name": plan_name,
                "payment_method": payment_method,
            },
        )
    engine.dispose()


def run_workers(stack: LocalStack, processes: int, *arguments: str) -> float:
    """Run worker processes until nothing is due; returns the wall time, process start included."""
    worker = load_manifest("worker")
    started = time.perf_counter()
    workers = [
        start_service(
            worker,
            stack.worker_env,
            "--until-idle",
            "--poll-interval=0.1",
            f"--heartbeat-file={devservers.scratch_dir('billing-bench-worker-')}/heartbeat",
            *arguments,
            output=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    for process in workers:
        if process.wait(timeout=900) != 0:
            raise SystemExit(f"a worker exited with {process.returncode}")
    return time.perf_counter() - started


# Per plan: invoices paid, seconds from the first invoice written to the last, and seconds from
# the first charge claimed to the last invoice paid, all by the database's clock.
_WORKER_SPANS = """
WITH bench AS (
  SELECT i.* FROM invoices AS i
  JOIN subscriptions AS s ON s.id = i.subscription_id
  JOIN plans AS pl ON pl.id = s.plan_id
  WHERE pl.name = :plan_name
)
SELECT count(*) FILTER (WHERE status = 'paid'),
       extract(epoch FROM max(created_at) - min(created_at)),
       extract(epoch FROM max(paid_at) - (SELECT min(p.created_at) FROM payments AS p
                                          JOIN bench ON bench.id = p.invoice_id))
FROM bench
"""


def worker_spans(database: DatabaseSettings, plan_name: str) -> tuple[int, float, float]:
    engine = create_engine(database.url())
    with engine.begin() as connection:
        connection.execute(text("SELECT set_config('billing.all_tenants', 'on', true)"))
        paid, renewing, charging = connection.execute(
            text(_WORKER_SPANS), {"plan_name": plan_name}
        ).one()
    engine.dispose()
    return int(paid), float(renewing or 0.0), float(charging or 0.0)


def measure_worker(
    stack: LocalStack, *, processes: int, subscriptions: int, batch_size: int
) -> WorkerResult:
    """Renewals (set-based, a batch a transaction) by several workers, charged by the simulator."""
    database = DatabaseSettings.from_env(stack.worker_env)
    bench_api.progress(f"Worker renewals: {subscriptions:,} due subscriptions, {processes} workers")
    seed_due_subscriptions(
        database, subscriptions, plan_name="Bench renewals", payment_method="pm_card_visa"
    )
    wall_seconds = run_workers(stack, processes, f"--batch-size={batch_size}")
    paid, renewing, charging = worker_spans(database, "Bench renewals")
    if paid != subscriptions:
        raise SystemExit(f"expected {subscriptions} paid invoices, found {paid}")
    return WorkerResult(processes, subscriptions, batch_size, renewing, charging, wall_seconds)


def measure_charging(stack: LocalStack, *, invoices: int, concurrency: int) -> ChargingResult:
    """One worker charging invoices through a gateway that takes 300 ms a call."""
    database = DatabaseSettings.from_env(stack.worker_env)
    bench_api.progress(f"Worker charges: {invoices:,} invoices through a 300 ms gateway")
    seed_due_subscriptions(
        database, invoices, plan_name="Bench charging", payment_method=REAL_GATEWAY_CARD
    )
    wall_seconds = run_workers(stack, 1, f"--charge-concurrency={concurrency}")
    paid, _, charging = worker_spans(database, "Bench charging")
    if paid != invoices:
        raise SystemExit(f"expected {invoices} paid invoices, found {paid}")
    return ChargingResult(invoices, concurrency, charging, wall_seconds)


def report(worker: WorkerResult, charging: ChargingResult) -> str:
    rows = [
        (
            "Worker renewals",
            (
                f"{worker.processes} workers, {worker.subscriptions} due subscriptions, "
                f"batches of {worker.batch_size}"
            ),
            f"{worker.subscriptions / worker.renewing_seconds:.0f} renewals/s (set-based)",
        ),
        (
            "Worker charges, simulator",
            f"the same {worker.subscriptions} invoices",
            (
                f"{worker.subscriptions / worker.charging_seconds:.0f} charges/s; all paid "
                f"({worker.wall_seconds:.1f} s in all, including process start)"
            ),
        ),
        (
            "Worker charges, 300 ms gateway",
            f"1 worker, {charging.invoices} invoices, {charging.concurrency} calls in flight",
            (
                f"{charging.invoices / charging.charging_seconds:.0f} charges/s; all paid, "
                f"once each ({charging.wall_seconds:.1f} s in all)"
            ),
        ),
    ]
    lines = ["| Benchmark | Setting | Result |", "| --- | --- | --- |"]
    lines += [f"| {name} | {setting} | {result} |" for name, setting, result in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.bench", description=__doc__)
    bench_api.add_arguments(parser)
    count = bench_api.positive(int)
    parser.add_argument("--workers", type=count, default=2)
    parser.add_argument("--subscriptions", type=count, default=20000)
    parser.add_argument("--batch-size", type=count, default=500, help="renewals per transaction")
    parser.add_argument("--charges", type=count, default=1500, help="invoices at 300 ms a charge")
    parser.add_argument("--charge-concurrency", type=count, default=32)
    parser.add_argument(
        "--worker-only", action="store_true", help="measure the worker alone, not the API"
    )
    arguments = parser.parse_args(argv)
    directory = devservers.scratch_dir("billing-bench-")
    try:
        with bench_api.bench_stack(directory) as stack:
            api = None if arguments.worker_only else bench_api.run(stack, arguments, directory)
            worker = measure_worker(
                stack,
                processes=arguments.workers,
                subscriptions=arguments.subscriptions,
                batch_size=arguments.batch_size,
            )
            charging = measure_charging(
                stack, invoices=arguments.charges, concurrency=arguments.charge_concurrency
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if api is not None:
        print(api)
        print()
    print(report(worker, charging))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
