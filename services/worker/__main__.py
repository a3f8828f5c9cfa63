"""`python -m services.worker`: run the billing worker until SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from types import FrameType

from prometheus_client import start_http_server

from services.billing.cache import blocking_client
from services.billing.clock import system_clock
from services.billing.collection import CLAIM_LEASE
from services.billing.config import ConfigError, Settings
from services.billing.db import WORKER_TIMEOUTS, create_database_engine, session_factory
from services.billing.gateway import build_gateway
from services.billing.logs import configure_logging
from services.worker.heartbeat import DEFAULT_HEARTBEAT_FILE
from services.worker.runner import Worker, WorkerOptions


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.worker", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=500, help="subscriptions per renewal")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between scans")
    parser.add_argument(
        "--until-idle", action="store_true", help="exit once nothing is due (batch runs)"
    )
    parser.add_argument(
        "--charge-concurrency",
        type=int,
        default=32,
        help="gateway calls in flight at once (each in a thread, holding no connection)",
    )
    parser.add_argument(
        "--claim-lease",
        type=float,
        default=CLAIM_LEASE.total_seconds(),
        help="seconds a claimed charge is this worker's before another sends its key again",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: off)"
    )
    parser.add_argument(
        "--heartbeat-file",
        type=Path,
        default=DEFAULT_HEARTBEAT_FILE,
        help="touched while the worker makes progress; the container health check reads it",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("worker", settings.environment)
    if arguments.metrics_port:
        start_http_server(arguments.metrics_port, addr="127.0.0.1")
    engine = create_database_engine(settings.database, pool_size=2, timeouts=WORKER_TIMEOUTS)
    cache = blocking_client(settings.cache)
    worker = Worker(
        session_factory(engine),
        build_gateway(settings.gateway, cache),
        clock=system_clock,
        options=WorkerOptions(
            renewal_batch_size=arguments.batch_size,
            poll_interval_seconds=arguments.poll_interval,
            until_idle=arguments.until_idle,
            heartbeat_file=arguments.heartbeat_file,
            charge_concurrency=arguments.charge_concurrency,
            claim_lease=timedelta(seconds=arguments.claim_lease),
        ),
    )

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        del signum
        worker.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        worker.run()
    finally:
        cache.close()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
