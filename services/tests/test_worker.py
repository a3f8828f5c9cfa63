"""The worker's renewal cycle and dunning schedule, driven by a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.billing.collection import (
    DUNNING_SCHEDULE,
    GATEWAY_RETRY_DELAY,
    CollectionOutcome,
    idempotency_key,
)
from services.billing.gateway import (
    ChargeOutcome,
    ChargeRequest,
    GatewayIdempotencyConflictError,
    SimulatorGateway,
)
from services.billing.ids import new_id
from services.billing.invoicing import issue_cycle_invoice, renew_due_subscriptions
from services.billing.models import (
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from services.billing.periods import BillingInterval
from services.tests.conftest import ManualClock
from services.tests.factories import SEEDED_TENANT, seed_due_subscriptions
from services.worker.runner import Worker, WorkerOptions


@pytest.fixture
def worker(
    sessions: sessionmaker[Session], simulator: SimulatorGateway, clock: ManualClock, db: Session
) -> Worker:
    del db  # Requested for the clean slate.
    return Worker(sessions, simulator, clock=clock, options=WorkerOptions(renewal_batch_size=7))


def reload(db: Session, subscription: Subscription) -> Subscription:
    db.expire_all()
    return db.get_one(Subscription, subscription.id)


def invoices_for(db: Session, subscription: Subscription) -> list[Invoice]:
    db.expire_all()
    return list(
        db.scalars(
            select(Invoice)
            .where(Invoice.subscription_id == subscription.id)
            .order_by(Invoice.period_start)
        )
    )


def test_renewal_invoices_each_due_subscription_once_and_charges_it(
    worker: Worker, db: Session, clock: ManualClock, simulator: SimulatorGateway
) -> None:
    subscriptions = seed_due_subscriptions(db, 20, now=clock.now, amount=1500)
    ended = {subscription.id: subscription.current_period_end for subscription in subscriptions}
    report = worker.run_cycle()
    assert report.renewed == 20
    assert report.collections == {CollectionOutcome.PAID: 20}
    for subscription in subscriptions:
        renewed = reload(db, subscription)
        [invoice] = invoices_for(db, subscription)
        assert invoice.status is InvoiceStatus.PAID
        assert invoice.amount_due == 1500
        assert invoice.period_start == ended[subscription.id]
        assert renewed.current_period_start == invoice.period_start
        assert renewed.current_period_end == invoice.period_end
        assert renewed.current_period_end > clock.now
    assert len(simulator.charges()) == 20
    # Nothing is due any more: running again changes nothing.
    assert worker.run_cycle().idle
    assert len(simulator.charges()) == 20


def test_month_end_anchor_survives_short_months(
    worker: Worker, db: Session, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    anchored = reload(db, subscription)
    anchored.billing_anchor = datetime(2024, 1, 31, 12, tzinfo=UTC)
    anchored.current_period_start = datetime(2024, 12, 31, 12, tzinfo=UTC)
    anchored.current_period_end = clock.now = datetime(2025, 1, 31, 12, tzinfo=UTC)
    db.commit()
    ends = []
    for _ in range(3):
        worker.run_cycle()
        ends.append(reload(db, subscription).current_period_end)
        clock.now = ends[-1]
    assert [(end.month, end.day) for end in ends] == [(2, 28), (3, 31), (4, 30)]


def test_trial_end_starts_the_first_paid_period(
    worker: Worker, db: Session, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    reload(db, subscription).status = SubscriptionStatus.TRIALING
    db.commit()
    worker.run_cycle()
    assert reload(db, subscription).status is SubscriptionStatus.ACTIVE
    assert [invoice.status for invoice in invoices_for(db, subscription)] == [InvoiceStatus.PAID]


def test_cancel_at_period_end_ends_instead_of_renewing(
    worker: Worker, db: Session, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    period_end = subscription.current_period_end
    reload(db, subscription).cancel_at_period_end = True
    db.commit()
    report = worker.run_cycle()
    assert report.canceled == 1
    ended = reload(db, subscription)
    assert ended.status is SubscriptionStatus.CANCELED
    assert ended.canceled_at == period_end
    assert invoices_for(db, subscription) == []


def test_paused_subscriptions_do_not_renew(worker: Worker, db: Session, clock: ManualClock) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    reload(db, subscription).status = SubscriptionStatus.PAUSED
    db.commit()
    assert worker.run_cycle().idle
    assert invoices_for(db, subscription) == []


def test_credit_pays_part_of_the_renewal(worker: Worker, db: Session, clock: ManualClock) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now, amount=1500)
    db.get_one(Customer, subscription.customer_id).credit_balance = 400
    db.commit()
    worker.run_cycle()
    [invoice] = invoices_for(db, subscription)
    assert (invoice.subtotal, invoice.credit_applied, invoice.amount_due) == (1500, 400, 1100)
    assert db.get_one(Customer, subscription.customer_id).credit_balance == 0


def test_dunning_retries_on_schedule_then_cancels(
    worker: Worker, db: Session, clock: ManualClock, simulator: SimulatorGateway
) -> None:
    [subscription] = seed_due_subscriptions(
        db, 1, now=clock.now, payment_method="pm_card_chargeDeclined"
    )
    worker.run_cycle()
    [invoice] = invoices_for(db, subscription)
    assert invoice.attempt_count == 1
    assert reload(db, subscription).status is SubscriptionStatus.PAST_DUE
    for retry, delay in enumerate(DUNNING_SCHEDULE, start=1):
        assert invoice.next_attempt_at == clock.now + delay
        # Not a moment early.
        clock.now += delay - timedelta(seconds=1)
        assert worker.run_cycle().idle
        clock.now += timedelta(seconds=1)
        worker.run_cycle()
        [invoice] = invoices_for(db, subscription)
        assert invoice.attempt_count == retry + 1
    assert invoice.status is InvoiceStatus.UNCOLLECTIBLE
    assert invoice.next_attempt_at is None
    canceled = reload(db, subscription)
    assert canceled.status is SubscriptionStatus.CANCELED
    assert canceled.cancellation_reason == "payment_failed"
    attempts = db.scalars(select(Payment).where(Payment.invoice_id == invoice.id)).all()
    assert sorted(payment.attempt_number for payment in attempts) == [1, 2, 3, 4]
    assert {payment.status for payment in attempts} == {PaymentStatus.FAILED}
    assert simulator.charges() == []


def test_a_fixed_card_recovers_the_subscription_on_the_next_retry(
    worker: Worker, db: Session, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(
        db, 1, now=clock.now, payment_method="pm_card_chargeDeclined"
    )
    worker.run_cycle()
    db.get_one(Customer, subscription.customer_id).payment_method = "pm_card_visa"
    db.commit()
    clock.advance(DUNNING_SCHEDULE[0])
    worker.run_cycle()
    [invoice] = invoices_for(db, subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert invoice.attempt_count == 2
    assert reload(db, subscription).status is SubscriptionStatus.ACTIVE


def test_gateway_outage_retries_soon_without_using_an_attempt(
    worker: Worker, db: Session, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(
        db, 1, now=clock.now, payment_method="pm_sim_unavailable"
    )
    worker.run_cycle()
    [invoice] = invoices_for(db, subscription)
    assert invoice.attempt_count == 0
    assert (invoice.last_error or "").startswith("gateway_unavailable")
    # The attempt's outcome is unknown: the same key goes to the gateway again in 5 minutes.
    [payment] = db.scalars(select(Payment).where(Payment.invoice_id == invoice.id)).all()
    assert payment.status is PaymentStatus.PENDING
    assert payment.next_check_at == clock.now + GATEWAY_RETRY_DELAY
    assert reload(db, subscription).status is SubscriptionStatus.ACTIVE
    clock.advance(GATEWAY_RETRY_DELAY)
    db.get_one(Customer, subscription.customer_id).payment_method = "pm_card_visa"
    db.commit()
    # The outage is over: the same attempt (same key) goes through.
    assert worker.run_cycle().collections == {CollectionOutcome.PAID: 1}
    [invoice] = invoices_for(db, subscription)
    assert (invoice.status, invoice.attempt_count) == (InvoiceStatus.PAID, 1)
    [payment] = db.scalars(select(Payment).where(Payment.invoice_id == invoice.id)).all()
    assert payment.idempotency_key == idempotency_key(invoice, 1)


def test_a_charge_lost_in_a_crash_is_found_again_not_repeated(
    worker: Worker, db: Session, clock: ManualClock, simulator: SimulatorGateway
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    worker.run_cycle()
    [invoice] = invoices_for(db, subscription)
    # Rewind to "charged at the gateway, then the worker died before committing".
    db.execute(delete(Payment).where(Payment.invoice_id == invoice.id))
    invoice.status, invoice.attempt_count = InvoiceStatus.OPEN, 0
    invoice.next_attempt_at, invoice.paid_at = clock.now, None
    db.commit()
    assert len(simulator.charges()) == 1
    worker.run_cycle()
    [invoice] = invoices_for(db, subscription)
    assert invoice.status is InvoiceStatus.PAID
    assert len(simulator.charges()) == 1
    [payment] = db.scalars(select(Payment).where(Payment.invoice_id == invoice.id)).all()
    assert payment.idempotency_key == idempotency_key(invoice, 1)


def test_a_card_changed_after_a_crash_stops_retries_rather_than_risk_a_second_charge(
    worker: Worker, db: Session, clock: ManualClock, simulator: SimulatorGateway
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    worker.run_cycle()
    [invoice] = invoices_for(db, subscription)
    db.execute(delete(Payment).where(Payment.invoice_id == invoice.id))
    invoice.status, invoice.attempt_count = InvoiceStatus.OPEN, 0
    invoice.next_attempt_at, invoice.paid_at = clock.now, None
    db.get_one(Customer, subscription.customer_id).payment_method = "pm_card_chargeDeclined"
    db.commit()
    report = worker.run_cycle()
    assert report.collections == {CollectionOutcome.NEEDS_REVIEW: 1}
    [invoice] = invoices_for(db, subscription)
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.next_attempt_at is None
    assert (invoice.last_error or "").startswith("idempotency_conflict")
    assert len(simulator.charges()) == 1
    assert worker.run_cycle().idle


def test_the_database_refuses_a_second_invoice_for_a_period(
    db: Session, clock: ManualClock
) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    plan = db.get_one(Plan, subscription.plan_id)
    issue_cycle_invoice(db, subscription, plan, now=clock.now)
    db.commit()
    with pytest.raises(IntegrityError, match="uq_invoices_cycle_period"):
        issue_cycle_invoice(db, subscription, plan, now=clock.now)
    db.rollback()
    count = db.scalar(
        select(func.count()).select_from(Invoice).where(Invoice.kind == InvoiceKind.CYCLE)
    )
    assert count == 1


def test_the_database_refuses_a_second_successful_payment(db: Session, clock: ManualClock) -> None:
    [subscription] = seed_due_subscriptions(db, 1, now=clock.now)
    invoice = issue_cycle_invoice(
        db, subscription, db.get_one(Plan, subscription.plan_id), now=clock.now
    )
    for attempt in (1, 2):
        db.add(
            Payment(
                id=new_id(),
                tenant_id=invoice.tenant_id,
                invoice_id=invoice.id,
                attempt_number=attempt,
                amount=invoice.amount_due,
                currency="USD",
                status=PaymentStatus.SUCCEEDED,
                gateway="simulator",
                idempotency_key=idempotency_key(invoice, attempt),
            )
        )
    with pytest.raises(IntegrityError, match="uq_payments_one_success_per_invoice"):
        db.commit()


def test_the_simulator_replays_a_key_and_rejects_its_reuse(
    simulator: SimulatorGateway, db: Session
) -> None:
    del db  # For the clean cache.
    request = ChargeRequest(
        amount=100,
        currency="USD",
        payment_method="pm_card_visa",
        customer_reference=None,
        description="test",
        invoice_id="invoice-1",
        idempotency_key="key-1",
    )
    first = simulator.charge(request)
    assert first.outcome is ChargeOutcome.SUCCEEDED
    assert simulator.charge(request) == first
    assert len(simulator.charges()) == 1
    with pytest.raises(GatewayIdempotencyConflictError, match="different charge"):
        simulator.charge(ChargeRequest(**{**request.__dict__, "amount": 200}))
    declined = simulator.charge(
        ChargeRequest(
            **{
                **request.__dict__,
                "payment_method": "pm_card_chargeDeclined",
                "idempotency_key": "key-2",
            }
        )
    )
    assert (declined.outcome, declined.failure_code) == (ChargeOutcome.DECLINED, "card_declined")


def test_interval_enum_matches_the_database_check(db: Session) -> None:
    plan = Plan(
        id=new_id(),
        tenant_id=SEEDED_TENANT,
        name="Weekly",
        amount=100,
        currency="USD",
        interval=BillingInterval.WEEK,
        trial_days=0,
    )
    db.add(plan)
    db.commit()
    db.expire_all()
    assert db.get_one(Plan, plan.id).interval is BillingInterval.WEEK


def test_renewal_is_set_based_a_few_statements_per_batch(db: Session, clock: ManualClock) -> None:
    subscriptions = seed_due_subscriptions(db, 200, now=clock.now)
    # One customer has credit: it goes through the row-by-row path, the rest in bulk.
    db.get_one(Customer, subscriptions[0].customer_id).credit_balance = 400
    db.commit()
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    connection = db.connection()
    event.listen(connection, "before_cursor_execute", count)
    try:
        report = renew_due_subscriptions(db, now=clock.now, batch_size=500)
        db.commit()
    finally:
        event.remove(connection, "before_cursor_execute", count)
    assert (report.renewed, report.canceled) == (200, 0)
    # Take the batch, move the periods, one invoice by hand (about ten statements), then the
    # other 199 invoices, their lines and numbers: independent of the batch's size.
    assert len(statements) <= 20, statements
    invoices = db.scalars(select(Invoice).order_by(Invoice.number)).all()
    assert [invoice.number for invoice in invoices] == list(range(1, 201))
    assert {invoice.amount_due for invoice in invoices} == {1500, 1100}


def _rows_read(db: Session, table: str) -> tuple[int, int]:
    """Rows this transaction has read from the table so far: by sequential scans, by indexes."""
    scanned, fetched = db.execute(
        text(
            "SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables"
            " WHERE relname = :table"
        ),
        {"table": table},
    ).one()
    return int(scanned), int(fetched)


def test_a_renewal_batch_reads_invoices_by_key_however_many_there_are(
    db: Session, clock: ManualClock
) -> None:
    # A thousand invoices already, then a batch of 200 more: each line's invoice is found by its
    # key. The finality guard joined to invoices under a plan made while they were few read the
    # whole table per line (0005); the lines' foreign-key check, planned while young, took the
    # (tenant_id, number) index and read every invoice of the tenant per line (before 0007).
    seed_due_subscriptions(db, 1000, now=clock.now)
    renew_due_subscriptions(db, now=clock.now, batch_size=1000)
    db.commit()
    seed_due_subscriptions(db, 200, now=clock.now)
    scanned, fetched = _rows_read(db, "invoices")
    report = renew_due_subscriptions(db, now=clock.now, batch_size=500)
    assert report.renewed == 200
    scanned_after, fetched_after = _rows_read(db, "invoices")
    assert scanned_after == scanned
    # A few rows per line (its foreign-key check and the guard), not the tenant's every invoice.
    assert fetched_after - fetched <= 3 * 200
    db.commit()
    assert db.scalar(select(func.count()).select_from(Invoice)) == 1200


def test_lines_written_before_their_invoice_still_need_it_at_commit(
    db: Session, clock: ManualClock
) -> None:
    # Renewal defers the lines' reference to their invoice; the check still runs, at commit.
    plan = seed_due_subscriptions(db, 1, now=clock.now)[0].plan_id
    line = {
        "id": new_id(),
        "tenant": SEEDED_TENANT,
        "invoice": new_id(),
        "plan": plan,
        "at": clock.now,
    }
    insert_line = text(
        "INSERT INTO invoice_lines (id, tenant_id, invoice_id, description, amount, plan_id,"
        " period_start, period_end)"
        " VALUES (:id, :tenant, :invoice, 'Orphan', 100, :plan, :at, :at)"
    )
    with pytest.raises(IntegrityError, match="fk_invoice_lines_tenant_id_invoices"):
        db.execute(insert_line, line)
    db.rollback()
    db.execute(text("SET CONSTRAINTS fk_invoice_lines_tenant_id_invoices DEFERRED"))
    db.execute(insert_line, line)
    with pytest.raises(IntegrityError, match="fk_invoice_lines_tenant_id_invoices"):
        db.commit()
    db.rollback()
