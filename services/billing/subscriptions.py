"""The subscription lifecycle the API drives: start, change plan, cancel, pause, resume.

Row locks follow the order in services.billing.locks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import exists, select

from services.billing.currencies import currency as currency_rules
from services.billing.errors import ConflictError, NotFoundError
from services.billing.ids import new_id
from services.billing.invoicing import (
    LineItem,
    cycle_description,
    issue_cycle_invoice,
    issue_invoice,
    void_open_invoice,
)
from services.billing.locks import lock_open_invoices, lock_subscription
from services.billing.models import (
    Customer,
    Invoice,
    InvoiceKind,
    Payment,
    PaymentStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from services.billing.periods import next_period_end, prorate

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.orm import Session


def start_subscription(
    session: Session, *, customer_id: uuid.UUID, plan_id: uuid.UUID, now: datetime
) -> Subscription:
    """Subscribe a customer; the first period is a trial if the plan has one, else invoiced now."""
    customer = session.scalars(
        select(Customer).where(Customer.id == customer_id).with_for_update()
    ).first()
    if customer is None:
        raise NotFoundError("customer", customer_id)
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise NotFoundError("plan", plan_id)
    _require_currency(customer, plan)
    customer.currency = plan.currency
    if plan.trial_days > 0:
        trial_end = now + timedelta(days=plan.trial_days)
        status, period_end, anchor = SubscriptionStatus.TRIALING, trial_end, trial_end
    else:
        status, anchor = SubscriptionStatus.ACTIVE, now
        period_end = next_period_end(anchor, plan.interval, now)
    subscription = Subscription(
        id=new_id(),
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        plan_id=plan.id,
        status=status,
        billing_anchor=anchor,
        current_period_start=now,
        current_period_end=period_end,
        cancel_at_period_end=False,
    )
    session.add(subscription)
    session.flush()
    if status is SubscriptionStatus.ACTIVE:
        issue_cycle_invoice(session, subscription, plan, now=now)
    return subscription


def change_plan(
    session: Session, subscription_id: uuid.UUID, *, plan_id: uuid.UUID, now: datetime
) -> tuple[Subscription, Invoice | None]:
    """Switch plans now and invoice the difference (the rules are in services/README.md).

    Same interval: credit the unused share of the old price and charge the same share of the
    new one, over the current period. Another interval: as Stripe does, the billing anchor
    resets to now and the invoice charges the new plan's full period minus the unused credit
    (https://docs.stripe.com/billing/subscriptions/billing-cycle#changing and
    https://docs.stripe.com/billing/subscriptions/prorations). Either way, this period's unpaid
    invoices are voided and billed again on the new invoice, so credit is only ever given for
    time that was paid for.
    """
    if session.get(Subscription, subscription_id) is None:
        raise NotFoundError("subscription", subscription_id)
    # Invoices before their subscription (services.billing.locks).
    open_invoices = lock_open_invoices(session, subscription_id)
    subscription = lock_subscription(session, subscription_id)
    if subscription.status not in {SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING}:
        raise ConflictError(
            "subscription_not_active",
            f"Only active or trialing subscriptions change plan; this one is "
            f"{subscription.status.value}",
        )
    new_plan = session.get(Plan, plan_id)
    if new_plan is None:
        raise NotFoundError("plan", plan_id)
    if new_plan.id == subscription.plan_id:
        raise ConflictError("plan_unchanged", "The subscription is already on this plan")
    old_plan = session.get_one(Plan, subscription.plan_id)
    _require_currency(session.get_one(Customer, subscription.customer_id), new_plan)
    subscription.plan_id = new_plan.id
    if subscription.status is SubscriptionStatus.TRIALING:
        # Nothing paid to prorate; the trial runs to its end on the new plan.
        session.flush()
        return subscription, None
    unpaid = [
        invoice
        for invoice in open_invoices
        if invoice.period_start >= subscription.current_period_start
    ]
    if _any_payment_pending(session, unpaid):
        raise ConflictError(
            "payment_pending",
            "A payment for this period is awaiting the gateway's result; change plan after it",
        )
    rules = currency_rules(new_plan.currency)
    period = subscription.current_period_end - subscription.current_period_start
    remaining = subscription.current_period_end - now
    lines = []
    for voided in unpaid:
        void_open_invoice(session, voided, now=now)
        lines.append(
            LineItem(f"Unpaid charges voided on invoice {voided.id}", voided.subtotal, None)
        )
    unused = rules.round_down(prorate(old_plan.amount, remaining, period))
    lines.append(LineItem(f"Unused time on {old_plan.name}", -unused, old_plan.id))
    if new_plan.interval is old_plan.interval:
        charge = rules.round_down(prorate(new_plan.amount, remaining, period))
        lines.append(LineItem(f"Remaining time on {new_plan.name}", charge, new_plan.id))
        period_start, period_end = now, subscription.current_period_end
    else:
        subscription.billing_anchor = subscription.current_period_start = now
        subscription.current_period_end = next_period_end(now, new_plan.interval, now)
        lines.append(
            LineItem(
                cycle_description(new_plan.name, new_plan.interval), new_plan.amount, new_plan.id
            )
        )
        period_start, period_end = now, subscription.current_period_end
    session.flush()
    invoice = None
    if any(line.amount for line in lines):
        invoice = issue_invoice(
            session,
            tenant_id=subscription.tenant_id,
            customer_id=subscription.customer_id,
            subscription_id=subscription.id,
            kind=InvoiceKind.PRORATION,
            currency=new_plan.currency,
            period_start=period_start,
            period_end=period_end,
            lines=[line for line in lines if line.amount],
            now=now,
        )
    return subscription, invoice


def cancel(
    session: Session, subscription_id: uuid.UUID, *, at_period_end: bool, now: datetime
) -> Subscription:
    """Cancel when the paid period ends, or now (open invoices are voided, nothing refunded)."""
    if session.get(Subscription, subscription_id) is None:
        raise NotFoundError("subscription", subscription_id)
    if not at_period_end:
        _void_open_invoices(session, subscription_id, now=now)
    subscription = lock_subscription(session, subscription_id)
    if subscription.status is SubscriptionStatus.CANCELED:
        raise ConflictError("subscription_canceled", "The subscription is already canceled")
    if at_period_end:
        subscription.cancel_at_period_end = True
    else:
        # Again under the subscription's lock: a renewal may have issued one meanwhile.
        _void_open_invoices(session, subscription_id, now=now)
        subscription.status = SubscriptionStatus.CANCELED
        subscription.canceled_at = now
        subscription.cancellation_reason = "canceled_by_request"
    session.flush()
    return subscription


def pause(session: Session, subscription_id: uuid.UUID, *, now: datetime) -> Subscription:
    """Stop renewing; the period already paid for is kept for when the subscription resumes."""
    subscription = lock_subscription(session, subscription_id)
    if subscription.status is not SubscriptionStatus.ACTIVE:
        raise ConflictError(
            "subscription_not_pausable",
            f"Only active subscriptions pause; this one is {subscription.status.value}",
        )
    subscription.status = SubscriptionStatus.PAUSED
    subscription.paused_at = now
    session.flush()
    return subscription


def resume(session: Session, subscription_id: uuid.UUID, *, now: datetime) -> Subscription:
    """Continue a paused subscription; if its paid period is over, a new one starts now."""
    subscription = lock_subscription(session, subscription_id)
    if subscription.status is not SubscriptionStatus.PAUSED:
        raise ConflictError(
            "subscription_not_paused",
            f"Only paused subscriptions resume; this one is {subscription.status.value}",
        )
    subscription.paused_at = None
    if subscription.current_period_end <= now and subscription.cancel_at_period_end:
        # The period it was to end with is over: it ends, rather than starting a new one.
        subscription.status = SubscriptionStatus.CANCELED
        subscription.canceled_at = subscription.current_period_end
        subscription.cancellation_reason = "canceled_at_period_end"
        session.flush()
        return subscription
    subscription.status = SubscriptionStatus.ACTIVE
    if subscription.current_period_end <= now:
        plan = session.get_one(Plan, subscription.plan_id)
        subscription.billing_anchor = now
        subscription.current_period_start = now
        subscription.current_period_end = next_period_end(now, plan.interval, now)
        session.flush()
        issue_cycle_invoice(session, subscription, plan, now=now)
    session.flush()
    return subscription


def get_subscription(session: Session, subscription_id: uuid.UUID) -> Subscription:
    subscription = session.get(Subscription, subscription_id)
    if subscription is None:
        raise NotFoundError("subscription", subscription_id)
    return subscription


def _void_open_invoices(session: Session, subscription_id: uuid.UUID, *, now: datetime) -> None:
    # A payment still pending for one of them is refunded if it succeeds.
    for invoice in lock_open_invoices(session, subscription_id):
        void_open_invoice(session, invoice, now=now)


def _any_payment_pending(session: Session, invoices: list[Invoice]) -> bool:
    return bool(invoices) and bool(
        session.scalar(
            select(
                exists().where(
                    Payment.invoice_id.in_([invoice.id for invoice in invoices]),
                    Payment.status == PaymentStatus.PENDING,
                )
            )
        )
    )


def _require_currency(customer: Customer, plan: Plan) -> None:
    if customer.currency is not None and customer.currency != plan.currency:
        raise ConflictError(
            "currency_mismatch",
            f"The customer is billed in {customer.currency}; the plan is in {plan.currency}",
        )
