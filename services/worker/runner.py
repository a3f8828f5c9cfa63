"""The worker loop: renew what is due, then charge what is due, until told to stop.

Any number of workers may run at once. Renewal locks subscriptions and collection locks
invoices with FOR UPDATE SKIP LOCKED, so workers share out the due rows; each unit of work is
one transaction, so a worker killed mid-run leaves nothing half-done for the others to trip on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import and_, exists, or_, select

from services.billing.collection import (
    CLAIM_LEASE,
    FAILURE_OUTCOMES,
    Attempt,
    Claimed,
    CollectionOutcome,
    GatewayAnswer,
    call_gateway,
    claim_due_checks,
    claim_due_invoices,
    push_back,
    record,
    record_many,
)
from services.billing.invoicing import (
    RENEWING_STATUSES,
    ScanPosition,
    renew_due_subscriptions,
)
from services.billing.metrics import charge_attempts
from services.billing.models import Invoice, InvoiceStatus, Payment, PaymentStatus, Subscription

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from services.billing.clock import Clock
    from services.billing.gateway import PaymentGateway

logger = logging.getLogger(__name__)

renewals = Counter(
    "billing_worker_renewals_total", "Subscriptions renewed or ended, by result.", ["result"]
)
cycle_duration = Histogram(
    "billing_worker_cycle_duration_seconds", "Time for one renew-and-collect cycle."
)
collection_errors = Counter(
    "billing_worker_collection_errors_total",
    "Payments pushed back because recording their outcome failed, and cycles that failed.",
    ["stage"],
)
failing_cycles = Gauge(
    "billing_worker_consecutive_failing_cycles",
    "Cycles in a row that failed or whose every charge ended in an error (0 when healthy).",
)


@dataclass(frozen=True)
class WorkerOptions:
    renewal_batch_size: int = 500
    poll_interval_seconds: float = 5.0
    # Exit once nothing is due, counting rows other workers hold (for batch runs and tests).
    until_idle: bool = False
    heartbeat_file: Path | None = None
    # Gateway calls in flight at once; each runs in a thread and holds no database connection.
    charge_concurrency: int = 32
    # How long a claimed attempt is this worker's before another sends its key again.
    claim_lease: timedelta = CLAIM_LEASE


@dataclass
class CycleReport:
    renewed: int = 0
    canceled: int = 0
    collections: Tally[CollectionOutcome] = field(default_factory=Tally)

    @property
    def idle(self) -> bool:
        return not (self.renewed or self.canceled or self.collections)

    @property
    def failing(self) -> bool:
        """Charges were attempted and every one ended in an error, none in an answer."""
        return bool(self.collections) and set(self.collections) <= FAILURE_OUTCOMES


ClaimStep = Callable[["Session", datetime, int, "ScanPosition | None"], Claimed]


class Worker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        gateway: PaymentGateway,
        *,
        clock: Clock,
        options: WorkerOptions,
    ) -> None:
        self._sessions = sessions
        self._gateway = gateway
        self._clock = clock
        self._options = options
        self._stopping = threading.Event()
        self.consecutive_failures = 0

    def stop(self) -> None:
        """Finish the gateway calls in flight and record them, then return from run()."""
        self._stopping.set()

    def run(self) -> None:
        logger.info("worker started", extra={"gateway": self._gateway.name})
        while not self._stopping.is_set():
            try:
                report = self.run_cycle()
            except Exception:
                # Keep running through a database failover or a cache restart (the unit of work
                # rolled back and will be retried); the failure count in the heartbeat makes the
                # health check fail if it goes on.
                logger.exception("cycle failed; retrying after the poll interval")
                collection_errors.labels("cycle").inc()
                self._count_cycle(failed=True)
                self._stopping.wait(self._options.poll_interval_seconds)
                continue
            self._count_cycle(failed=report.failing)
            if not report.idle:
                logger.info(
                    "cycle done",
                    extra={
                        "renewed": report.renewed,
                        "canceled": report.canceled,
                        "collections": {k.value: v for k, v in report.collections.items()},
                    },
                )
                if not report.failing:
                    continue
            if self._options.until_idle and not self.work_remains():
                break
            self._beat()
            self._stopping.wait(self._options.poll_interval_seconds)
        logger.info("worker stopped")

    def run_cycle(self) -> CycleReport:
        """Renew every due subscription, then check due payments, then charge due invoices."""
        report = CycleReport()
        started = time.perf_counter()
        # Rows skipped because another worker held them are behind the position; the next
        # cycle starts from the beginning again and finds them if that worker died.
        position: ScanPosition | None = None
        while not self._stopping.is_set():
            with self._sessions() as session:
                renewal = renew_due_subscriptions(
                    session,
                    now=self._clock(),
                    batch_size=self._options.renewal_batch_size,
                    after=position,
                )
                session.commit()
            position = renewal.position
            renewals.labels("renewed").inc(renewal.renewed)
            renewals.labels("canceled").inc(renewal.canceled)
            report.renewed += renewal.renewed
            report.canceled += renewal.canceled
            self._beat()
            if renewal.handled == 0:
                break
        lease = self._options.claim_lease
        self._collect(
            lambda session, now, limit, after: claim_due_checks(
                session, now=now, limit=limit, after=after, lease=lease
            ),
            report,
        )
        self._collect(
            lambda session, now, limit, after: claim_due_invoices(
                session,
                gateway_name=self._gateway.name,
                now=now,
                limit=limit,
                after=after,
                lease=lease,
            ),
            report,
        )
        cycle_duration.observe(time.perf_counter() - started)
        return report

    def _collect(self, claim: ClaimStep, report: CycleReport) -> None:
        """Claim attempts in batches and keep up to charge_concurrency gateway calls in flight.

        Claims and records are short transactions on this thread; the calls run in a thread
        pool holding neither a connection nor a lock.
        """
        concurrency = max(1, self._options.charge_concurrency)
        position: ScanPosition | None = None
        in_flight: dict[Future[GatewayAnswer], Attempt] = {}
        exhausted = False
        with ThreadPoolExecutor(concurrency, thread_name_prefix="gateway") as calls:
            while True:
                if (
                    not (exhausted or self._stopping.is_set())
                    and len(in_flight) <= concurrency // 2
                ):
                    with self._sessions() as session:
                        claimed = claim(
                            session, self._clock(), concurrency - len(in_flight), position
                        )
                    position = claimed.position
                    exhausted = claimed.handled == 0
                    if claimed.voided:
                        report.collections[CollectionOutcome.VOIDED] += claimed.voided
                    for attempt in claimed.attempts:
                        in_flight[calls.submit(call_gateway, self._gateway, attempt)] = attempt
                if not in_flight:
                    if exhausted or self._stopping.is_set():
                        return
                    continue
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                self._record_all(
                    [(in_flight.pop(future), future.result()) for future in done], report
                )
                self._beat()

    def _record_all(
        self, answers: list[tuple[Attempt, GatewayAnswer]], report: CycleReport
    ) -> None:
        """Record the answers that came back together in one transaction, else one by one."""
        try:
            with self._sessions() as session:
                outcomes = record_many(session, answers, now=self._clock())
        except Exception:
            logger.exception("recording a batch of answers failed; recording them one by one")
            for attempt, answer in answers:
                self._record(attempt, answer, report)
            return
        for outcome in outcomes:
            charge_attempts.labels(self._gateway.name, outcome.value).inc()
            report.collections[outcome] += 1

    def _record(self, attempt: Attempt, answer: GatewayAnswer, report: CycleReport) -> None:
        try:
            with self._sessions() as session:
                outcome = record(session, attempt, answer, now=self._clock())
        except Exception as error:
            # This payment only: push it back in a transaction of its own and go on.
            logger.exception(
                "recording a gateway answer failed; payment pushed back",
                extra={"payment_id": str(attempt.payment_id)},
            )
            collection_errors.labels("record").inc()
            outcome = CollectionOutcome.ERROR
            try:
                with self._sessions() as session:
                    push_back(session, attempt, error, now=self._clock())
            except Exception:
                # Its lease runs out and the reconciliation scan sends the same key again.
                logger.exception("pushing the payment back failed too")
        charge_attempts.labels(self._gateway.name, outcome.value).inc()
        report.collections[outcome] += 1

    def work_remains(self) -> bool:
        """Anything due, including rows other workers hold or have claimed right now."""
        now = self._clock()
        with self._sessions() as session:
            return bool(
                session.scalar(
                    select(
                        or_(
                            exists().where(
                                Subscription.status.in_(RENEWING_STATUSES),
                                Subscription.current_period_end <= now,
                            ),
                            exists().where(
                                Invoice.status == InvoiceStatus.OPEN,
                                Invoice.next_attempt_at <= now,
                            ),
                            exists().where(
                                Payment.status.in_(
                                    (PaymentStatus.PENDING, PaymentStatus.REFUNDING)
                                ),
                                Payment.next_check_at <= now,
                            ),
                            # Claimed by a worker that may have died: its lease runs out soon.
                            exists().where(
                                and_(
                                    Payment.status == PaymentStatus.PENDING,
                                    Payment.gateway_reference.is_(None),
                                    Payment.next_check_at <= now + self._options.claim_lease,
                                )
                            ),
                        )
                    )
                )
            )

    def _count_cycle(self, *, failed: bool) -> None:
        self.consecutive_failures = self.consecutive_failures + 1 if failed else 0
        failing_cycles.set(self.consecutive_failures)
        self._beat()

    def _beat(self) -> None:
        heartbeat = self._options.heartbeat_file
        if heartbeat is None:
            return
        # Written whole and renamed into place, so the health check never reads half of it.
        staging = heartbeat.with_name(heartbeat.name + ".tmp")
        staging.write_text(json.dumps({"consecutive_failures": self.consecutive_failures}))
        staging.replace(heartbeat)
