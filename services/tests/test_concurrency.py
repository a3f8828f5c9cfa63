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
from services.billing.models import Invoice, InvoiceKind, InvoiceStatus, Payment, PaymentStatus
from services.tests.conftest import subprocess_env
from services.tests.factories import seed_due_subscriptions
from services.tests.processes import start_service, stop, wait_while_progressing

SUBSCRIPTIONS = 1000
WORKERS = 4


def invoices_issued(db: Session) -> int:
    return progress(db)[0]


def progress(db: Session) -> tuple[int, int]:
    """Invoices issued and payments that succeeded so far."""
    db.rollback()
    issued = db.scalar(select(func.count()).select_from(Invoice)) or 0
    paid = (
        db.scalar(
            select(func.count())
            .select_from(Payment)
            .where(Payment.status == PaymentStatus.SUCCEEDED)
        )
        or 0
    )
    # Not left idle in a transaction while the workers run: the server ends those after 60 s.
    db.rollback()
    return issued, paid


def exited(workers: list[subprocess.Popen[bytes]], logs: Path) -> list[int]:
    """The workers that have exited so far; one that failed stops the test with its log."""
    for index, worker in enumerate(workers):
        if index and worker.poll() not in {None, 0}:
            log = (logs / f"worker-{index}.log").read_text()
            raise AssertionError(f"worker {index} exited with {worker.returncode}: {log}")
    return [index for index, worker in enumerate(workers) if worker.poll() is not None]


@pytest.mark.slow
def test_parallel_workers_with_one_killed_invoice_and_charge_each_period_once(
    db: Session, service_env: dict[str, str], simulator: SimulatorGateway, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    subscriptions = seed_due_subscriptions(db, SUBSCRIPTIONS, now=now)
    ended = {subscription.id: subscription.current_period_end for subscription in subscriptions}
    env = subprocess_env(service_env)
    workers = [
        start_service(
            "services.worker",
            env,
            "--until-idle",
            "--poll-interval=0.1",
            "--batch-size=20",
            # A killed worker's claims pass to the others after this many seconds.
            "--claim-lease=5",
            f"--heartbeat-file={tmp_path / f'worker-{index}.heartbeat'}",
            log=tmp_path / f"worker-{index}.log",
        )
        for index in range(WORKERS)
    ]
    try:
        victim = workers[0]
        # Conditions, not deadlines: on a loaded machine four workers starting up and billing a
        # thousand subscriptions may take minutes. A wait fails only when nothing has moved for
        # a while (a hang), and a worker that exits early is reported at once.
        survivors = dict(enumerate(workers[1:], start=1))
        wait_while_progressing(
            lambda: (tmp_path / "worker-0.heartbeat").exists() and invoices_issued(db) >= 100,
            lambda: (progress(db), exited(workers, tmp_path)),
            stall=120,
            what="the workers to get going",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        charged_when_killed = len(simulator.charges())
        wait_while_progressing(
            lambda: all(worker.poll() is not None for worker in survivors.values()),
            lambda: (progress(db), exited(workers, tmp_path)),
            stall=120,
            what="the other workers to finish",
        )
        for index, worker in survivors.items():
            assert worker.returncode == 0, (tmp_path / f"worker-{index}.log").read_text()
    finally:
        for worker in workers:
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
