"""Many workers at once, one killed mid-run: every subscription is billed exactly once."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.billing.gateway import SimulatorGateway
from services.billing.gateway.simulator import SLOW_CARD
from services.billing.models import Invoice, InvoiceKind, InvoiceStatus, Payment, PaymentStatus
from services.tests.conftest import subprocess_env
from services.tests.factories import seed_due_subscriptions
from services.tests.processes import start_service, stop, wait_while_progressing

SUBSCRIPTIONS = 1000
WORKERS = 4
# The worker's default --charge-concurrency: calls each worker has in flight.
CHARGES_IN_FLIGHT = 32


def progress(db: Session) -> tuple[int, int, int]:
    """Invoices issued, attempts claimed and payments that succeeded so far."""
    db.rollback()
    issued = db.scalar(select(func.count()).select_from(Invoice)) or 0
    claimed = db.scalar(select(func.count()).select_from(Payment)) or 0
    succeeded = (
        db.scalar(
            select(func.count())
            .select_from(Payment)
            .where(Payment.status == PaymentStatus.SUCCEEDED)
        )
        or 0
    )
    # Not left idle in a transaction while the workers run: the server ends those after 60 s.
    db.rollback()
    return issued, claimed, succeeded


def running(workers: dict[int, subprocess.Popen[bytes]], logs: Path) -> int:
    """How many of the workers run; one that exited stops the test with its log."""
    for index, worker in workers.items():
        if worker.poll() is not None:
            log = (logs / f"worker-{index}.log").read_text()
            raise AssertionError(f"worker {index} exited with {worker.returncode}: {log}")
    return len(workers)


@pytest.mark.slow
def test_parallel_workers_with_one_killed_invoice_and_charge_each_period_once(
    db: Session, service_env: dict[str, str], simulator: SimulatorGateway, tmp_path: Path
) -> None:
    env = subprocess_env(service_env)
    workers = {
        index: start_service(
            "services.worker",
            env,
            "--poll-interval=0.1",
            "--batch-size=20",
            # A killed worker's claims pass to the others after this many seconds.
            "--claim-lease=5",
            f"--heartbeat-file={tmp_path / f'worker-{index}.heartbeat'}",
            log=tmp_path / f"worker-{index}.log",
        )
        for index in range(WORKERS)
    }
    victim = workers[0]
    survivors = {index: worker for index, worker in workers.items() if index}
    # Conditions, not deadlines: on a loaded machine starting four workers and billing a
    # thousand subscriptions may take minutes, so a wait fails only when nothing has moved for
    # a while (a hang). The work is due only once every worker is up and polling, so however
    # unevenly they started, all four share it; and each charge takes the slow card's 1.5 s,
    # so the run lasts long enough for the kill to land in it, mid-charge.
    try:
        wait_while_progressing(
            lambda: all((tmp_path / f"worker-{index}.heartbeat").exists() for index in workers),
            lambda: sorted(path.name for path in tmp_path.glob("*.heartbeat")),
            stall=120,
            what="the workers to start",
        )
        now = datetime.now(UTC)
        subscriptions = seed_due_subscriptions(db, SUBSCRIPTIONS, now=now, payment_method=SLOW_CARD)
        ended = {subscription.id: subscription.current_period_end for subscription in subscriptions}
        wait_while_progressing(
            lambda: progress(db)[1] >= 2 * CHARGES_IN_FLIGHT,
            lambda: (progress(db), running(workers, tmp_path)),
            stall=120,
            what="the workers to start charging",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        charged_when_killed = len(simulator.charges())
        wait_while_progressing(
            lambda: progress(db)[2] == SUBSCRIPTIONS,
            lambda: (progress(db), running(survivors, tmp_path)),
            stall=120,
            what="every invoice to be paid",
        )
        for worker in survivors.values():
            worker.send_signal(signal.SIGTERM)
        for index, worker in survivors.items():
            # SIGTERM: finish what is in flight (nothing is left) and exit.
            worker.wait(timeout=120)
            assert worker.returncode == 0, (tmp_path / f"worker-{index}.log").read_text()
    finally:
        for worker in workers.values():
            stop(worker)
    assert victim.returncode == -signal.SIGKILL
    assert charged_when_killed < SUBSCRIPTIONS, "the kill came after the run, not during it"

    db.rollback()
    invoices = db.scalars(select(Invoice).where(Invoice.kind == InvoiceKind.CYCLE)).all()
    per_subscription = Counter(invoice.subscription_id for invoice in invoices)
    assert set(per_subscription) == set(ended)
    assert set(per_subscription.values()) == {1}
    for invoice in invoices:
        assert invoice.subscription_id is not None
        assert invoice.period_start == ended[invoice.subscription_id]
        assert invoice.status is InvoiceStatus.PAID
    successes = Counter(
        db.scalars(
            select(Payment.invoice_id).where(Payment.status == PaymentStatus.SUCCEEDED)
        ).all()
    )
    assert len(successes) == SUBSCRIPTIONS
    assert set(successes.values()) == {1}
    # The gateway's own ledger: one charge per invoice, whatever the killed worker had sent.
    charged = Counter(charge["invoice_id"] for charge in simulator.charges())
    assert set(charged) == {str(invoice.id) for invoice in invoices}
    assert set(charged.values()) == {1}
