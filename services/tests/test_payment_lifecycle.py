"""The payment lifecycle: claim, call holding nothing, record; webhooks, refunds, checks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from services.billing import invoices
from services.billing.collection import (
    CLAIM_LEASE,
    DUNNING_SCHEDULE,
    GATEWAY_RETRY_DELAY,
    PROCESSING_CHECK_INTERVAL,
    CollectionOutcome,
    call_gateway,
    claim_due_checks,
    claim_due_invoices,
    record,
)
from services.billing.gateway import ChargeRequest, ChargeResult, SimulatorGateway
from services.billing.invoicing import renew_due_subscriptions
from services.billing.models import (
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    Subscription,
    WebhookEvent,
)
from services.tests.conftest import WEBHOOK_SECRET, BillingClient, ManualClock
from services.tests.factories import create_customer, create_plan, seed_due_subscriptions, subscribe
from services.tests.webhook_signing import signed_event
from services.worker import healthcheck
from services.worker.runner import Worker, WorkerOptions

if TYPE_CHECKING:
    from collections.abc import Callable


def payments_of(db: Session, invoice_id: object) -> list[Payment]:
    db.expire_all()
    return list(
        db.scalars(
            select(Payment).where(Payment.invoice_id == invoice_id).order_by(Payment.created_at)
        )
    )


def only_invoice(db: Session, subscription: Subscription) -> Invoice:
    db.expire_all()
    [invoice] = db.scalars(select(Invoice).where(Invoice.subscription_id == subscription.id))
    return invoice


def deliver(client: BillingClient, event_id: str, event_type: str, subject: dict[str, Any]) -> Any:
    payload, signature = signed_event(WEBHOOK_SECRET, event_id, event_type, subject)
    return client.post(
        "/v1/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
    )


class ObservingGateway(SimulatorGateway):
    """The simulator, running a check of the test's while each charge is at the gateway."""

    def __init__(self, simulator: SimulatorGateway, during_charge: Callable[[], object]) -> None:
        super().__init__(simulator._cache)
        self._during_charge = during_charge

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self._during_charge()
        return super().charge(request)


def test_no_lock_or_transaction_is_held_across_the_gateway_call(
    db: Session, sessions: sessionmaker[Session], simulator: SimulatorGateway, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    seen: list[tuple[int, int]] = []

    def during_charge() -> None:
        with sessions() as other:
            # NOWAIT: fails at once if the worker held the invoice's row lock.
            locked = len(
                other.execute(
                    text("SELECT id FROM invoices WHERE status = 'open' FOR UPDATE NOWAIT")
                ).all()
            )
            idle_in_transaction = other.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            other.rollback()
        seen.append((locked, idle_in_transaction))

    worker = Worker(
        sessions,
        ObservingGateway(simulator, during_charge),
        clock=clock,
        options=WorkerOptions(),
    )
    assert worker.run_cycle().collections == {CollectionOutcome.PAID: 1}
    assert seen == [(1, 0)]
    assert only_invoice(db, subscription).status is InvoiceStatus.PAID


def test_calls_are_in_flight_concurrently(
    db: Session, sessions: sessionmaker[Session], simulator: SimulatorGateway, clock: ManualClock
) -> None:
    seed_due_subscriptions(db, 6, now=clock.now)
    # Each call waits at the gateway until all six are there: only calls in flight together
    # get past it. (Sampling how many slow charges were in flight as each call began raced:
    # on a loaded machine all six could look before the first one counted itself.) The
    # timeout only ends a run whose calls were made one at a time: its first call never gets
    # company, and the broken barrier fails every charge.
    all_at_the_gateway = threading.Barrier(6, timeout=60)

    worker = Worker(
        sessions,
        ObservingGateway(simulator, all_at_the_gateway.wait),
        clock=clock,
        options=WorkerOptions(charge_concurrency=6),
    )
    assert worker.run_cycle().collections == {CollectionOutcome.PAID: 6}
    assert not all_at_the_gateway.broken
    assert len(simulator.charges()) == 6


def test_a_webhook_that_beats_the_recorded_reference_finds_the_payment_by_its_id(
    db: Session, client: BillingClient, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    renew_due_subscriptions(db, now=clock.now, batch_size=10)
    db.commit()
    # Claimed and committed, the gateway called, its answer not yet recorded.
    claimed = claim_due_invoices(db, gateway_name="stripe", now=clock.now, limit=10)
    [attempt] = claimed.attempts
    response = deliver(
        client,
        "evt_early",
        "payment_intent.succeeded",
        {"id": "pi_early", "metadata": {"payment_id": str(attempt.payment_id)}},
    )
    assert response.status_code == 200, response.text
    invoice = only_invoice(db, subscription)
    assert invoice.status is InvoiceStatus.PAID
    [payment] = payments_of(db, invoice.id)
    assert (payment.status, payment.gateway_reference) == (PaymentStatus.SUCCEEDED, "pi_early")


def test_a_webhook_that_matches_nothing_answers_5xx_and_is_delivered_again(
    db: Session, client: BillingClient
) -> None:
    for _ in range(2):
        response = deliver(client, "evt_orphan", "payment_intent.succeeded", {"id": "pi_nobody"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "webhook_event_unmatched"
    db.expire_all()
    assert db.get(WebhookEvent, "evt_orphan") is None
    # Events about anything else are acknowledged: nothing to retry for.
    assert deliver(client, "evt_other", "customer.created", {"id": "cus_1"}).status_code == 200


def test_cancel_now_with_a_pending_payment_refunds_the_success_that_follows(
    client: BillingClient,
    sessions: sessionmaker[Session],
    simulator: SimulatorGateway,
    clock: ManualClock,
) -> None:
    customer = create_customer(client, payment_method="pm_sim_processing")
    subscription = subscribe(client, customer, create_plan(client, amount=2500))
    [invoice] = client.get("/v1/invoices", params={"subscription_id": subscription["id"]}).json()[
        "data"
    ]
    assert client.post_new(f"/v1/invoices/{invoice['id']}/pay").status_code == 202
    canceled = client.post_new(
        f"/v1/subscriptions/{subscription['id']}/cancel", {"at_period_end": False}
    )
    assert canceled.json()["status"] == "canceled"
    [payment] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    assert (
        deliver(
            client, "evt_late", "payment_intent.succeeded", {"id": payment["gateway_reference"]}
        ).status_code
        == 200
    )
    # The invoice stays void; the money goes back.
    assert client.get(f"/v1/invoices/{invoice['id']}").json()["status"] == "void"
    # The API stamped the refund as due on the system clock; the worker's catches up.
    clock.now = datetime.now(UTC)
    report = Worker(sessions, simulator, clock=clock, options=WorkerOptions()).run_cycle()
    assert report.collections == {CollectionOutcome.REFUNDED: 1}
    [refunded] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    assert refunded["status"] == "refunded"
    assert simulator.refunds() == [{"reference": payment["gateway_reference"], "amount": 2500}]


def test_a_success_after_a_decline_pays_the_open_invoice_and_dunning_stops(
    db: Session,
    client: BillingClient,
    sessions: sessionmaker[Session],
    simulator: SimulatorGateway,
    clock: ManualClock,
) -> None:
    [subscription] = seed_due_subscriptions(
        db, 1, now=clock.now, payment_method="pm_card_authenticationRequired"
    )
    worker = Worker(sessions, simulator, clock=clock, options=WorkerOptions())
    assert worker.run_cycle().collections == {CollectionOutcome.DECLINED: 1}
    invoice = only_invoice(db, subscription)
    [payment] = payments_of(db, invoice.id)
    assert (payment.status, payment.failure_code) == (
        PaymentStatus.FAILED,
        "authentication_required",
    )
    # The customer authenticated after all (in Stripe, only before the cancel lands).
    response = deliver(
        client, "evt_auth", "payment_intent.succeeded", {"id": payment.gateway_reference}
    )
    assert response.status_code == 200, response.text
    invoice = only_invoice(db, subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.next_attempt_at is None
    clock.advance(GATEWAY_RETRY_DELAY * 1000)
    assert worker.run_cycle().idle


def test_a_success_for_an_invoice_already_paid_is_refunded(
    db: Session,
    client: BillingClient,
    sessions: sessionmaker[Session],
    simulator: SimulatorGateway,
    clock: ManualClock,
) -> None:
    # On the system clock, as the API that takes the webhook is.
    clock.now = datetime.now(UTC)
    [subscription] = seed_due_subscriptions(
        db, 1, now=clock.now, payment_method="pm_card_authenticationRequired"
    )
    worker = Worker(sessions, simulator, clock=clock, options=WorkerOptions())
    worker.run_cycle()
    invoice = only_invoice(db, subscription)
    [declined] = payments_of(db, invoice.id)
    db.execute(
        text("UPDATE customers SET payment_method = 'pm_card_visa' WHERE id = :id"),
        {"id": invoice.customer_id},
    )
    db.commit()
    clock.advance(DUNNING_SCHEDULE[0])
    assert worker.run_cycle().collections == {CollectionOutcome.PAID: 1}
    deliver(client, "evt_dup", "payment_intent.succeeded", {"id": declined.gateway_reference})
    assert worker.run_cycle().collections == {CollectionOutcome.REFUNDED: 1}
    statuses = sorted(payment.status.value for payment in payments_of(db, invoice.id))
    assert statuses == ["refunded", "succeeded"]
    assert [refund["reference"] for refund in simulator.refunds()] == [declined.gateway_reference]


def test_reconciliation_asks_the_gateway_about_a_payment_still_processing(
    db: Session, sessions: sessionmaker[Session], simulator: SimulatorGateway, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(
        db, 1, now=clock.now, payment_method="pm_sim_processing"
    )
    worker = Worker(sessions, simulator, clock=clock, options=WorkerOptions())
    assert worker.run_cycle().collections == {CollectionOutcome.PENDING: 1}
    invoice = only_invoice(db, subscription)
    [payment] = payments_of(db, invoice.id)
    assert payment.gateway_reference is not None
    simulator.finish_processing(payment.gateway_reference, succeeded=True)
    # No webhook came; a few minutes on, the worker asks.
    assert worker.run_cycle().idle
    clock.advance(PROCESSING_CHECK_INTERVAL)
    assert worker.run_cycle().collections == {CollectionOutcome.PAID: 1}
    assert only_invoice(db, subscription).status is InvoiceStatus.PAID


def test_an_unexpected_gateway_error_pushes_back_that_invoice_and_the_rest_are_charged(
    db: Session, sessions: sessionmaker[Session], simulator: SimulatorGateway, clock: ManualClock
) -> None:
    [broken] = seed_due_subscriptions(
        db, 1, now=clock.now, payment_method="pm_sim_unexpected_error"
    )
    fine = seed_due_subscriptions(db, 3, now=clock.now)
    worker = Worker(sessions, simulator, clock=clock, options=WorkerOptions())
    report = worker.run_cycle()
    assert report.collections == {CollectionOutcome.PAID: 3, CollectionOutcome.ERROR: 1}
    assert all(only_invoice(db, sub).status is InvoiceStatus.PAID for sub in fine)
    invoice = only_invoice(db, broken)
    assert (invoice.status, invoice.attempt_count) == (InvoiceStatus.OPEN, 0)
    assert (invoice.last_error or "").startswith("error: _SimulatedBugError")
    [payment] = payments_of(db, invoice.id)
    assert payment.next_check_at == clock.now + GATEWAY_RETRY_DELAY


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_refused_gateway_key_counts_no_attempt_and_fails_the_health_check(
    db: Session,
    sessions: sessionmaker[Session],
    simulator: SimulatorGateway,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    [subscription] = seed_due_subscriptions(
        db, 1, now=clock.now, payment_method="pm_sim_misconfigured"
    )
    heartbeat = tmp_path / "heartbeat"
    worker = Worker(
        sessions,
        simulator,
        clock=clock,
        options=WorkerOptions(until_idle=True, poll_interval_seconds=0, heartbeat_file=heartbeat),
    )
    before = counter(
        "billing_charge_attempts_total", gateway="simulator", outcome="gateway_misconfigured"
    )
    for cycle in range(1, 4):
        worker.run()
        assert worker.consecutive_failures == cycle
        clock.advance(GATEWAY_RETRY_DELAY)
    assert healthcheck.main(["--heartbeat-file", str(heartbeat)]) == 1
    assert counter("billing_worker_consecutive_failing_cycles") == 3
    after = counter(
        "billing_charge_attempts_total", gateway="simulator", outcome="gateway_misconfigured"
    )
    assert after - before == 3
    invoice = only_invoice(db, subscription)
    assert (invoice.status, invoice.attempt_count) == (InvoiceStatus.OPEN, 0)
    # Fixed: the next cycle charges and the health check passes again.
    db.execute(
        text("UPDATE customers SET payment_method = 'pm_card_visa' WHERE id = :id"),
        {"id": invoice.customer_id},
    )
    db.commit()
    worker.run()
    assert only_invoice(db, subscription).status is InvoiceStatus.PAID
    assert healthcheck.main(["--heartbeat-file", str(heartbeat)]) == 0


def test_voiding_returns_the_credit_applied_to_the_invoice(
    client: BillingClient, db: Session
) -> None:
    customer = create_customer(client)
    db.execute(
        text("UPDATE customers SET credit_balance = 400 WHERE id = :id"), {"id": customer["id"]}
    )
    db.commit()
    subscription = subscribe(client, customer, create_plan(client, amount=3000))
    [invoice] = client.get("/v1/invoices", params={"subscription_id": subscription["id"]}).json()[
        "data"
    ]
    assert (invoice["credit_applied"], invoice["amount_due"]) == (400, 2600)
    assert client.get(f"/v1/customers/{customer['id']}").json()["credit_balance"] == 0
    assert client.post_new(f"/v1/invoices/{invoice['id']}/void").status_code == 200
    assert client.get(f"/v1/customers/{customer['id']}").json()["credit_balance"] == 400


def test_a_payment_that_cannot_be_recorded_does_not_stop_the_others(
    db: Session, sessions: sessionmaker[Session], simulator: SimulatorGateway, clock: ManualClock
) -> None:
    seed_due_subscriptions(db, 3, now=clock.now)
    vanished: list[str] = []

    def during_charge() -> None:
        if vanished:
            return
        # Something outside the worker removes one claimed payment while its call is out.
        with sessions() as other:
            gone = other.execute(
                text(
                    "DELETE FROM payments WHERE id = (SELECT id FROM payments"
                    " WHERE status = 'pending' ORDER BY id LIMIT 1) RETURNING id"
                )
            ).scalar_one()
            other.commit()
        vanished.append(str(gone))

    worker = Worker(
        sessions,
        ObservingGateway(simulator, during_charge),
        clock=clock,
        options=WorkerOptions(charge_concurrency=1),
    )
    report = worker.run_cycle()
    assert report.collections == {CollectionOutcome.PAID: 2, CollectionOutcome.ERROR: 1}
    db.expire_all()
    statuses = sorted(invoice.status.value for invoice in db.scalars(select(Invoice)))
    assert statuses == ["open", "paid", "paid"]


def test_an_answer_that_arrives_after_its_attempt_was_abandoned_is_refunded(
    db: Session, clock: ManualClock, simulator: SimulatorGateway
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    renew_due_subscriptions(db, now=clock.now, batch_size=10)
    db.commit()
    [attempt] = claim_due_invoices(db, gateway_name="simulator", now=clock.now, limit=10).attempts
    # The call is slow; meanwhile the invoice is voided and the attempt's lease runs out.
    invoices.void_invoice(db, attempt.invoice_id, now=clock.now)
    db.commit()
    clock.advance(CLAIM_LEASE)
    assert claim_due_checks(db, now=clock.now, limit=10).attempts == []
    [payment] = payments_of(db, attempt.invoice_id)
    assert (payment.status, payment.failure_code) == (PaymentStatus.FAILED, "abandoned")
    # Then the gateway answers: the charge went through.
    outcome = record(db, attempt, call_gateway(simulator, attempt), now=clock.now)
    assert outcome is CollectionOutcome.REFUNDING
    assert only_invoice(db, subscription).status is InvoiceStatus.VOID
