"""Issuing invoices and renewing subscriptions whose period has ended.

Lock order, everywhere: an invoice before its subscription, a subscription before its customer,
and several customers in id order. Renewal takes subscriptions with SKIP LOCKED so concurrent
workers split the due set instead of queueing on it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text, tuple_, update
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
from services.billing.periods import BillingInterval, next_period_end

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
        lines=[LineItem(cycle_description(plan.name, plan.interval), plan.amount, plan.id)],
        now=now,
    )


def cycle_description(plan_name: str, interval: BillingInterval) -> str:
    return f"{plan_name} ({_ADJECTIVES[interval]})"


_ADJECTIVES = {
    BillingInterval.DAY: "daily",
    BillingInterval.WEEK: "weekly",
    BillingInterval.MONTH: "monthly",
    BillingInterval.YEAR: "yearly",
}


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

    Set-based: one statement takes the batch (FOR UPDATE SKIP LOCKED, so workers share the due
    set), one moves every period, one ends the subscriptions set to cancel, and the invoices,
    their lines and their numbers are written a statement each. Only a customer with a credit
    or carried balance, or a price under the currency's minimum, goes through issue_invoice one
    by one (its balance needs the customer's row lock).

    The caller commits. The period moves in the same transaction as the invoice is written, so
    a worker that dies leaves both undone together. A subscription overdue by several periods
    catches up one period per call.
    """
    # The due batch alone, then its plans and customers by key: a join here lets the planner
    # pick a nested loop over whole tables when their statistics are young, seconds a batch.
    query = select(
        Subscription.id,
        Subscription.tenant_id,
        Subscription.customer_id,
        Subscription.plan_id,
        Subscription.billing_anchor,
        Subscription.current_period_end,
        Subscription.cancel_at_period_end,
    ).where(Subscription.status.in_(RENEWING_STATUSES), Subscription.current_period_end <= now)
    if after is not None:
        query = query.where(tuple_(Subscription.current_period_end, Subscription.id) > after)
    due = session.execute(
        query.order_by(Subscription.current_period_end, Subscription.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    if not due:
        return RenewalReport(renewed=0, canceled=0, position=after)
    plans = {
        row.id: row
        for row in session.execute(
            select(Plan.id, Plan.name, Plan.interval, Plan.amount, Plan.currency).where(
                Plan.id.in_({row.plan_id for row in due})
            )
        )
    }
    balances = {
        row.id: row
        for row in session.execute(
            select(Customer.id, Customer.credit_balance, Customer.debit_balance).where(
                Customer.id.in_({row.customer_id for row in due})
            )
        )
    }
    position = (due[-1].current_period_end, due[-1].id)
    ending = [row.id for row in due if row.cancel_at_period_end]
    renewing = [
        _Renewal(
            row,
            plans[row.plan_id],
            balances[row.customer_id],
            next_period_end(
                row.billing_anchor, plans[row.plan_id].interval, row.current_period_end
            ),
        )
        for row in due
        if not row.cancel_at_period_end
    ]
    if ending:
        session.execute(_END_AT_PERIOD_END, {"ids": ending})
    if renewing:
        session.execute(
            _MOVE_PERIODS,
            {
                "ids": [renewal.row.id for renewal in renewing],
                "ends": [renewal.period_end for renewal in renewing],
            },
        )
    # Customers with a balance first, locked in id order, then the tenants' number counters:
    # the order issue_invoice (and so the API) takes them in, so no two transactions deadlock.
    one_by_one = sorted(
        (renewal for renewal in renewing if renewal.needs_balance),
        key=lambda renewal: renewal.row.customer_id,
    )
    for renewal in one_by_one:
        # Read again: the bulk UPDATE above moved its period behind the ORM's back.
        subscription = session.get_one(Subscription, renewal.row.id, populate_existing=True)
        issue_cycle_invoice(
            session, subscription, session.get_one(Plan, renewal.row.plan_id), now=now
        )
    _insert_cycle_invoices(
        session, [renewal for renewal in renewing if not renewal.needs_balance], now=now
    )
    return RenewalReport(renewed=len(renewing), canceled=len(ending), position=position)


@dataclass(frozen=True)
class _Renewal:
    # Rows of the queries in renew_due_subscriptions.
    row: Any
    plan: Any
    balances: Any
    period_end: datetime

    @property
    def needs_balance(self) -> bool:
        minimum = currency_rules(self.plan.currency).minimum_charge
        held = self.balances.credit_balance or self.balances.debit_balance
        return bool(held) or self.plan.amount < minimum


_END_AT_PERIOD_END = text(
    """
    UPDATE subscriptions
       SET status = 'canceled', canceled_at = current_period_end,
           cancellation_reason = 'canceled_at_period_end'
     WHERE id = ANY(CAST(:ids AS uuid[]))
    """
)
# No join: the row-security filter makes the planner think a batch's subscriptions are a few
# rows, and it joined them to the unnested arrays by rescanning the arrays once per row (500
# rows: 100 ms). Each row finds its new end by its position in the batch instead, and the new
# period starts where the locked row's old one ended.
_MOVE_PERIODS = text(
    """
    UPDATE subscriptions
       SET current_period_start = current_period_end,
           current_period_end =
             (CAST(:ends AS timestamptz[]))[array_position(CAST(:ids AS uuid[]), id)],
           status = CASE WHEN status = 'trialing' THEN 'active' ELSE status END
     WHERE id = ANY(CAST(:ids AS uuid[]))
    """
)
_DEFER_LINE_INVOICE_CHECK = text("SET CONSTRAINTS fk_invoice_lines_tenant_id_invoices DEFERRED")
_INSERT_LINES = text(
    """
    INSERT INTO invoice_lines (id, tenant_id, invoice_id, description, amount, plan_id,
                               period_start, period_end)
    SELECT v.id, v.tenant_id, v.invoice_id, v.description, v.amount, v.plan_id,
           v.period_start, v.period_end
      FROM unnest(CAST(:ids AS uuid[]), CAST(:tenants AS varchar[]), CAST(:invoices AS uuid[]),
                  CAST(:descriptions AS varchar[]), CAST(:amounts AS bigint[]),
                  CAST(:plans AS uuid[]), CAST(:starts AS timestamptz[]),
                  CAST(:ends AS timestamptz[]))
           AS v(id, tenant_id, invoice_id, description, amount, plan_id, period_start,
                period_end)
    """
)
# Finalised as they are written: each tenant's counter moves by its share of the batch (in
# tenant order, the order issue_invoice locks them in) and its invoices take the numbers in
# batch order. Their lines are already in, so they never change after numbering (0004).
_INSERT_NUMBERED_INVOICES = text(
    """
    WITH batch AS (
      SELECT v.*, row_number() OVER (PARTITION BY v.tenant_id ORDER BY v.position) AS nth
        FROM unnest(CAST(:ids AS uuid[]), CAST(:tenants AS varchar[]),
                    CAST(:customers AS uuid[]), CAST(:subscriptions AS uuid[]),
                    CAST(:currencies AS varchar[]), CAST(:starts AS timestamptz[]),
                    CAST(:ends AS timestamptz[]), CAST(:amounts AS bigint[]))
             WITH ORDINALITY
             AS v(id, tenant_id, customer_id, subscription_id, currency, period_start,
                  period_end, amount, position)
    ), issued AS (
      SELECT tenant_id, count(*) AS issued FROM batch GROUP BY tenant_id
    ), counter AS (
      INSERT INTO invoice_number_sequences AS sequence (tenant_id, last_number)
      SELECT tenant_id, issued FROM issued ORDER BY tenant_id
          ON CONFLICT (tenant_id)
          DO UPDATE SET last_number = sequence.last_number + excluded.last_number
      RETURNING sequence.tenant_id, sequence.last_number
    )
    INSERT INTO invoices (id, tenant_id, number, customer_id, subscription_id, kind, status,
                          currency, period_start, period_end, subtotal, credit_applied,
                          amount_due, carried_forward, attempt_count, next_attempt_at,
                          created_at)
    SELECT b.id, b.tenant_id, counter.last_number - issued.issued + b.nth, b.customer_id,
           b.subscription_id, 'cycle', 'open', b.currency, b.period_start, b.period_end,
           b.amount, 0, b.amount, 0, 0, :now, clock_timestamp()
      FROM batch AS b
      JOIN issued USING (tenant_id)
      JOIN counter USING (tenant_id)
    """
)


def _insert_cycle_invoices(session: Session, renewals: list[_Renewal], *, now: datetime) -> None:
    """Issue the cycle invoices of renewals whose customers have no balance, set-based.

    The lines go in first, their reference to the invoice checked at commit, and then the
    invoices already numbered: one statement each, and no second write of every invoice to
    number it (an UPDATE of a row inserted in the same transaction checks its foreign keys
    again, and leaves a dead row behind).
    """
    if not renewals:
        return
    invoice_ids = [new_id() for _ in renewals]
    rows = [renewal.row for renewal in renewals]
    plans = [renewal.plan for renewal in renewals]
    starts = [row.current_period_end for row in rows]
    ends = [renewal.period_end for renewal in renewals]
    tenants = [row.tenant_id for row in rows]
    amounts = [plan.amount for plan in plans]
    session.execute(_DEFER_LINE_INVOICE_CHECK)
    session.execute(
        _INSERT_LINES,
        {
            "ids": [new_id() for _ in renewals],
            "tenants": tenants,
            "invoices": invoice_ids,
            "descriptions": [cycle_description(plan.name, plan.interval) for plan in plans],
            "amounts": amounts,
            "plans": [plan.id for plan in plans],
            "starts": starts,
            "ends": ends,
        },
    )
    session.execute(
        _INSERT_NUMBERED_INVOICES,
        {
            "now": now,
            "ids": invoice_ids,
            "tenants": tenants,
            "customers": [row.customer_id for row in rows],
            "subscriptions": [row.id for row in rows],
            "currencies": [plan.currency for plan in plans],
            "starts": starts,
            "ends": ends,
            "amounts": amounts,
        },
    )
