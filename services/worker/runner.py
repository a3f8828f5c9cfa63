"""The worker loop: renew what is due, then charge what is due, until told to stop.

Any number of workers may run at once. Renewal locks subscriptions and collection locks
invoices with FOR UPDATE SKIP LOCKED, so workers share out the due rows; each unit of work is
one transaction, so a worker killed mid-run leaves nothing half-done for the others to trip on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from sqlalchemy import exists, or_, select

from services.billing.collection import CollectionOutcome, collect_next_due_invoice
from services.billing.invoicing import (
    RENEWING_STATUSES,
    ScanPosition,
    renew_due_subscriptions,
)
from services.billing.metrics import charge_attempts
from services.billing.models import Invoice, InvoiceStatus, Subscription

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


@dataclass(frozen=True)
class WorkerOptions:
    renewal_batch_size: int = 100
    poll_interval_seconds: float = 5.0
    # Exit once nothing is due, counting rows other workers hold (for batch runs and tests).
    until_idle: bool = False
    heartbeat_file: Path | None = None


@dataclass
class CycleReport:
    renewed: int = 0
    canceled: int = 0
    collections: Tally[CollectionOutcome] = field(default_factory=Tally)

    @property
    def idle(self) -> bool:
        return not (self.renewed or self.canceled or self.collections)


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

    def stop(self) -> None:
        """Finish the unit of work in hand, then return from run()."""
        self._stopping.set()

    def run(self) -> None:
        logger.info("worker started", extra={"gateway": self._gateway.name})
        while not self._stopping.is_set():
            try:
                report = self.run_cycle()
            except Exception:
                # Keep running through a database failover or a cache restart (the unit of work
                # rolled back and will be retried); the heartbeat goes stale meanwhile, so a
                # dependency that stays down gets the task replaced.
                logger.exception("cycle failed; retrying after the poll interval")
                self._stopping.wait(self._options.poll_interval_seconds)
                continue
            if not report.idle:
                logger.info(
                    "cycle done",
                    extra={
                        "renewed": report.renewed,
                        "canceled": report.canceled,
                        "collections": {k.value: v for k, v in report.collections.items()},
                    },
                )
                continue
            if self._options.until_idle and not self.work_remains():
                break
            self._beat()
            self._stopping.wait(self._options.poll_interval_seconds)
        logger.info("worker stopped")

    def run_cycle(self) -> CycleReport:
        """Renew every due subscription, then attempt every due invoice, one unit at a time."""
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
        position = None
        while not self._stopping.is_set():
            with self._sessions() as session:
                collected = collect_next_due_invoice(
                    session, self._gateway, now=self._clock(), after=position
                )
            if collected is None:
                break
            position = collected.position
            charge_attempts.labels(self._gateway.name, collected.outcome.value).inc()
            report.collections[collected.outcome] += 1
            self._beat()
        cycle_duration.observe(time.perf_counter() - started)
        return report

    def work_remains(self) -> bool:
        """Anything due, including rows other workers hold locked right now."""
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
                        )
                    )
                )
            )

    def _beat(self) -> None:
        if self._options.heartbeat_file is not None:
            self._options.heartbeat_file.touch()
