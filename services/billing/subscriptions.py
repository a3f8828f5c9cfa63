"""The subscription lifecycle the API drives: start, change plan, cancel, pause, resume.

Row locks follow the order in services.billing.locks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from services.billing.errors import ConflictError, NotFoundError
from services.billing.ids import new_id
from services.billing.invoicing import LineItem, issue_cycle_invoice, issue_invoice
from services.billing.locks import lock_open_invoices, lock_subscription
from services.billing.models import (
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
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
    """Switch plans now, invoicing the difference for the rest of the period.

    The unused share of the old price is credited and the same share of the new price charged;
    a net credit (a downgrade) goes to the customer's balance for later invoices.
    """
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
    invoice = None
    # A trial has nothing paid to prorate.
    if subscription.status is SubscriptionStatus.ACTIVE:
        period = subscription.current_period_end - subscription.current_period_start
        remaining = subscription.current_period_end - now
        credit = prorate(old_plan.amount, remaining, period)
        charge = prorate(new_plan.amount, remaining, period)
        if credit or charge:
            invoice = issue_invoice(
                session,
                tenant_id=subscription.tenant_id,
                customer_id=subscription.customer_id,
                subscription_id=subscription.id,
                kind=InvoiceKind.PRORATION,
                currency=new_plan.currency,
                period_start=now,
                period_end=subscription.current_period_end,
                lines=[
                    LineItem(f"Unused time on {old_plan.name}", -credit, old_plan.id),
                    LineItem(f"Remaining time on {new_plan.name}", charge, new_plan.id),
                ],
                now=now,
            )
    if new_plan.interval is not old_plan.interval:
        # Periods of the new length start when the current one ends.
        subscription.billing_anchor = subscription.current_period_end
    subscription.plan_id = new_plan.id
    session.flush()
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
    subscription.status = SubscriptionStatus.ACTIVE
    subscription.paused_at = None
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
    for invoice in lock_open_invoices(session, subscription_id):
        invoice.status = InvoiceStatus.VOID
        invoice.voided_at = now
        invoice.next_attempt_at = None


def _require_currency(customer: Customer, plan: Plan) -> None:
    if customer.currency is not None and customer.currency != plan.currency:
        raise ConflictError(
            "currency_mismatch",
            f"The customer is billed in {customer.currency}; the plan is in {plan.currency}",
        )
