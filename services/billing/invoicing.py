"""Issuing invoices and renewing subscriptions whose period has ended.

Lock order, everywhere: an invoice before its subscription, a subscription before its customer,
and several customers in id order. Renewal takes subscriptions with SKIP LOCKED so concurrent
workers split the due set instead of queueing on it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.billing.currencies import currency as currency_rules
from services.billing.ids import new_id
from services.billing.models import (
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceNumberSequence,
    InvoiceStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from services.billing.periods import next_period_end

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

RENEWING_STATUSES = (
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
)


CARRIED_LINE = "Carried from earlier invoices (each below the minimum charge)"


@dataclass(frozen=True)
class LineItem:
    description: str
    amount: int
    plan_id: uuid.UUID | None


def issue_invoice(
    session: Session,
    *,
    tenant_id: str,
    customer_id: uuid.UUID,
    subscription_id: uuid.UUID | None,
    kind: InvoiceKind,
    currency: str,
    period_start: datetime,
    period_end: datetime,
    lines: list[LineItem],
    now: datetime,
) -> Invoice:
    """Record an invoice, paying what it can from the customer's credit.

    Amounts carried from earlier invoices (each below the minimum charge) are added as a line.
    A positive remainder is open and due now, unless it is below the currency's minimum charge:
    then the invoice is settled and the amount carried to the next one, as Stripe does
    (https://docs.stripe.com/api/invoices: "If the amount due for the invoice is less than
    Stripe's minimum allowed charge per currency, the invoice is automatically marked paid, and
    we add the amount due to the customer's credit balance which is applied to the next
    invoice"). A negative subtotal (a downgrade) becomes credit.
    """
    credit, debit = _lock_balances(session, customer_id)
    if debit:
        lines = [*lines, LineItem(CARRIED_LINE, debit, None)]
    subtotal = sum(line.amount for line in lines)
    credit_applied = min(credit, subtotal) if subtotal > 0 else 0
    amount_due = max(subtotal - credit_applied, 0)
    carried = amount_due if amount_due < currency_rules(currency).minimum_charge else 0
    amount_due -= carried
    _set_balances(
        session,
        customer_id,
        credit=credit - credit_applied + max(-subtotal, 0),
        debit=carried,
    )
    invoice = Invoice(
        id=new_id(),
        tenant_id=tenant_id,
        customer_id=customer_id,
        subscription_id=subscription_id,
        kind=kind,
        status=InvoiceStatus.OPEN if amount_due > 0 else InvoiceStatus.PAID,
        currency=currency,
        period_start=period_start,
        period_end=period_end,
        subtotal=subtotal,
        credit_applied=credit_applied,
        amount_due=amount_due,
        carried_forward=carried,
        attempt_count=0,
        next_attempt_at=now if amount_due > 0 else None,
        paid_at=None if amount_due > 0 else now,
        lines=[
            InvoiceLine(
                id=new_id(),
                tenant_id=tenant_id,
                description=line.description,
                amount=line.amount,
                plan_id=line.plan_id,
                period_start=period_start,
                period_end=period_end,
            )
            for line in lines
        ],
    )
    session.add(invoice)
    # Flush now so a second cycle invoice for the period fails here, on the unique index.
    session.flush()
    # Finalised: numbered after its lines are in, since from then on they cannot change.
    invoice.number = allocate_invoice_numbers(session, tenant_id, 1)
    session.flush()
    return invoice


def allocate_invoice_numbers(session: Session, tenant_id: str, count: int) -> int:
    """Take the tenant's next `count` invoice numbers; returns the first.

    The counter row stays locked until the caller's transaction ends, so numbers are given in
    commit order and a rollback gives them back: no gaps, no duplicates.
    """
    sequence = pg_insert(InvoiceNumberSequence).values(tenant_id=tenant_id, last_number=count)
    last = session.execute(
        sequence.on_conflict_do_update(
            index_elements=[InvoiceNumberSequence.tenant_id],
            set_={"last_number": InvoiceNumberSequence.last_number + count},
        ).returning(InvoiceNumberSequence.last_number)
    ).scalar_one()
    return int(last) - count + 1


def void_open_invoice(session: Session, invoice: Invoice, *, now: datetime) -> None:
    """Void an open invoice whose row lock the caller holds, returning the credit it used.

    In the same transaction: the credit spent on it goes back to the customer's balance. A
    payment still pending for it is refunded if it succeeds (services.billing.collection).
    """
    invoice.status = InvoiceStatus.VOID
    invoice.voided_at = now
    invoice.next_attempt_at = None
    if invoice.credit_applied:
        add_credit(session, invoice.customer_id, invoice.credit_applied)
    session.flush()


def issue_cycle_invoice(
    session: Session, subscription: Subscription, plan: Plan, *, now: datetime
) -> Invoice:
    """The invoice for the subscription's current period at the plan's full price."""
    return issue_invoice(
        session,
        tenant_id=subscription.tenant_id,
        customer_id=subscription.customer_id,
        subscription_id=subscription.id,
        kind=InvoiceKind.CYCLE,
        currency=plan.currency,
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
        lines=[LineItem(f"{plan.name} ({plan.interval.value}ly)", plan.amount, plan.id)],
        now=now,
    )


def _lock_balances(session: Session, customer_id: uuid.UUID) -> tuple[int, int]:
    """The customer's credit and carried debit, with the customer's row locked."""
    credit, debit = session.execute(
        select(Customer.credit_balance, Customer.debit_balance)
        .where(Customer.id == customer_id)
        .with_for_update()
    ).one()
    return int(credit), int(debit)


def _set_balances(session: Session, customer_id: uuid.UUID, *, credit: int, debit: int) -> None:
    session.execute(
        update(Customer)
        .where(Customer.id == customer_id)
        .values(credit_balance=credit, debit_balance=debit)
    )


def add_credit(session: Session, customer_id: uuid.UUID, amount: int) -> None:
    session.execute(
        update(Customer)
        .where(Customer.id == customer_id)
        .values(credit_balance=Customer.credit_balance + amount)
    )


# Where a scan of due rows got to: (due time, id). Scanning on from it rather than from the
# start keeps a long run linear: rows already handled leave dead index entries behind them.
ScanPosition = tuple[datetime, uuid.UUID]


@dataclass(frozen=True)
class RenewalReport:
    renewed: int
    canceled: int
    position: ScanPosition | None

    @property
    def handled(self) -> int:
        return self.renewed + self.canceled


def renew_due_subscriptions(
    session: Session, *, now: datetime, batch_size: int, after: ScanPosition | None = None
) -> RenewalReport:
    """Move up to batch_size due subscriptions into their next period, invoicing each once.

    The caller commits. Rows are locked until then, and the period moves in the same
    transaction as the invoice is written, so a worker that dies leaves both undone together.
    A subscription overdue by several periods catches up one period per call.
    """
    query = select(Subscription).where(
        Subscription.status.in_(RENEWING_STATUSES), Subscription.current_period_end <= now
    )
    if after is not None:
        query = query.where(tuple_(Subscription.current_period_end, Subscription.id) > after)
    due = session.scalars(
        query.order_by(Subscription.current_period_end, Subscription.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    position = (due[-1].current_period_end, due[-1].id) if due else after
    renewed = canceled = 0
    # Customer rows are locked (for credit) in id order so two workers never wait on each other.
    for subscription in sorted(due, key=lambda subscription: subscription.customer_id):
        if subscription.cancel_at_period_end:
            subscription.status = SubscriptionStatus.CANCELED
            subscription.canceled_at = subscription.current_period_end
            subscription.cancellation_reason = "canceled_at_period_end"
            canceled += 1
            continue
        plan = session.get_one(Plan, subscription.plan_id)
        start = subscription.current_period_end
        subscription.current_period_start = start
        subscription.current_period_end = next_period_end(
            subscription.billing_anchor, plan.interval, start
        )
        if subscription.status is SubscriptionStatus.TRIALING:
            subscription.status = SubscriptionStatus.ACTIVE
        issue_cycle_invoice(session, subscription, plan, now=now)
        renewed += 1
    return RenewalReport(renewed=renewed, canceled=canceled, position=position)
