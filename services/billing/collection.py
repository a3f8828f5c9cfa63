"""Charging open invoices and the dunning schedule that follows a declined charge.

A charge attempt holds the invoice's row lock across the gateway call and commits the outcome
with it. If the process dies in between, the lock is released, the attempt number is unchanged,
and the next attempt sends the same gateway idempotency key: the gateway answers with the
charge it already made instead of making another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, exists, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from services.billing.gateway import (
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
    GatewayIdempotencyConflictError,
    GatewayUnavailableError,
    PaymentGateway,
)
from services.billing.ids import new_id
from services.billing.invoicing import ScanPosition
from services.billing.models import (
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    Subscription,
    SubscriptionStatus,
)

logger = logging.getLogger(__name__)

# After the n-th declined attempt, retry DUNNING_SCHEDULE[n - 1] later; a decline after the
# last retry makes the invoice uncollectible and cancels the subscription.
DUNNING_SCHEDULE = (timedelta(days=1), timedelta(days=3), timedelta(days=5))
# A gateway outage is not the customer's fault: retry soon, without counting an attempt.
GATEWAY_RETRY_DELAY = timedelta(minutes=5)


class CollectionOutcome(StrEnum):
    PAID = "paid"
    DECLINED = "declined"
    # The last decline: the invoice is uncollectible and the subscription canceled.
    EXHAUSTED = "exhausted"
    PENDING = "pending"
    GATEWAY_UNAVAILABLE = "gateway_unavailable"
    # The subscription was canceled meanwhile; nothing is owed for it any more.
    VOIDED = "voided"
    # The gateway refused to replay the attempt's key; automatic retries stop.
    NEEDS_REVIEW = "needs_review"


def idempotency_key(invoice: Invoice, attempt: int) -> str:
    return f"billing-invoice-{invoice.id}-attempt-{attempt}"


@dataclass(frozen=True)
class Collected:
    outcome: CollectionOutcome
    # Pass back as `after` to continue the scan past this invoice.
    position: ScanPosition


def collect_next_due_invoice(
    session: Session, gateway: PaymentGateway, *, now: datetime, after: ScanPosition | None = None
) -> Collected | None:
    """Attempt the next due invoice no other worker holds; None when none is due. Commits."""
    query = select(Invoice).where(
        Invoice.status == InvoiceStatus.OPEN, Invoice.next_attempt_at <= now
    )
    if after is not None:
        query = query.where(tuple_(Invoice.next_attempt_at, Invoice.id) > after)
    invoice = session.scalars(
        query.order_by(Invoice.next_attempt_at, Invoice.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if invoice is None or invoice.next_attempt_at is None:
        session.rollback()
        return None
    position = (invoice.next_attempt_at, invoice.id)
    outcome = attempt_collection(session, gateway, invoice, now=now)
    session.commit()
    return Collected(outcome, position)


def attempt_collection(
    session: Session, gateway: PaymentGateway, invoice: Invoice, *, now: datetime
) -> CollectionOutcome:
    """Charge an open invoice whose row lock the caller holds; the caller commits."""
    subscription = (
        session.get(Subscription, invoice.subscription_id) if invoice.subscription_id else None
    )
    if subscription is not None and subscription.status is SubscriptionStatus.CANCELED:
        invoice.status = InvoiceStatus.VOID
        invoice.voided_at = now
        invoice.next_attempt_at = None
        return CollectionOutcome.VOIDED
    customer = session.get_one(Customer, invoice.customer_id)
    attempt = invoice.attempt_count + 1
    key = idempotency_key(invoice, attempt)
    if customer.payment_method is None:
        result = ChargeResult(
            ChargeOutcome.DECLINED, None, "payment_method_missing", "No saved payment method."
        )
    else:
        try:
            result = gateway.charge(
                ChargeRequest(
                    amount=invoice.amount_due,
                    currency=invoice.currency,
                    payment_method=customer.payment_method,
                    customer_reference=customer.gateway_customer_id,
                    description=f"Invoice {invoice.id}",
                    invoice_id=str(invoice.id),
                    idempotency_key=key,
                )
            )
        except GatewayUnavailableError as error:
            logger.warning(
                "gateway unavailable", extra={"invoice_id": str(invoice.id), "error": str(error)}
            )
            invoice.next_attempt_at = now + GATEWAY_RETRY_DELAY
            invoice.last_error = f"gateway_unavailable: {error}"
            return CollectionOutcome.GATEWAY_UNAVAILABLE
        except GatewayIdempotencyConflictError as error:
            # A new key could charge a second time; only a person can tell whether the first
            # request went through (the gateway's dashboard shows it).
            logger.error(  # noqa: TRY400 - an expected condition, its traceback says nothing
                "attempt key replayed with other parameters; invoice needs review",
                extra={"invoice_id": str(invoice.id), "error": str(error)},
            )
            invoice.next_attempt_at = None
            invoice.last_error = f"idempotency_conflict: {error}"
            return CollectionOutcome.NEEDS_REVIEW
    payment = Payment(
        id=new_id(),
        tenant_id=invoice.tenant_id,
        invoice_id=invoice.id,
        attempt_number=attempt,
        amount=invoice.amount_due,
        currency=invoice.currency,
        status=PaymentStatus.PENDING,
        gateway=gateway.name,
        gateway_reference=result.reference,
        idempotency_key=key,
    )
    session.add(payment)
    invoice.attempt_count = attempt
    if result.outcome is ChargeOutcome.SUCCEEDED:
        settle_paid(session, invoice, payment, now=now)
        return CollectionOutcome.PAID
    if result.outcome is ChargeOutcome.PENDING:
        # Not retried by the schedule: the gateway's webhook settles it either way.
        invoice.next_attempt_at = None
        return CollectionOutcome.PENDING
    return record_decline(
        session,
        invoice,
        payment,
        code=result.failure_code or "declined",
        message=result.failure_message,
        now=now,
    )


def settle_paid(session: Session, invoice: Invoice, payment: Payment, *, now: datetime) -> None:
    payment.status = PaymentStatus.SUCCEEDED
    invoice.status = InvoiceStatus.PAID
    invoice.paid_at = now
    invoice.next_attempt_at = None
    invoice.last_error = None
    session.flush()
    if invoice.subscription_id is not None:
        restore_if_settled(session, invoice.subscription_id)


def record_decline(
    session: Session,
    invoice: Invoice,
    payment: Payment,
    *,
    code: str,
    message: str | None,
    now: datetime,
) -> CollectionOutcome:
    payment.status = PaymentStatus.FAILED
    payment.failure_code = code
    payment.failure_message = message
    invoice.last_error = code
    retries_used = invoice.attempt_count
    if retries_used <= len(DUNNING_SCHEDULE):
        invoice.next_attempt_at = now + DUNNING_SCHEDULE[retries_used - 1]
        if invoice.subscription_id is not None:
            _set_subscription_status(
                session,
                invoice.subscription_id,
                SubscriptionStatus.PAST_DUE,
                only_from=(SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING),
            )
        session.flush()
        return CollectionOutcome.DECLINED
    invoice.status = InvoiceStatus.UNCOLLECTIBLE
    invoice.next_attempt_at = None
    if invoice.subscription_id is not None:
        session.execute(
            update(Subscription)
            .where(
                Subscription.id == invoice.subscription_id,
                Subscription.status != SubscriptionStatus.CANCELED,
            )
            .values(
                status=SubscriptionStatus.CANCELED,
                canceled_at=now,
                cancellation_reason="payment_failed",
            )
            .execution_options(synchronize_session="fetch")
        )
    session.flush()
    return CollectionOutcome.EXHAUSTED


def restore_if_settled(session: Session, subscription_id: object) -> None:
    """A past-due subscription is active again once no open invoice has a failed attempt."""
    other = aliased(Invoice)
    session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription_id,
            Subscription.status == SubscriptionStatus.PAST_DUE,
            ~exists().where(
                and_(
                    other.subscription_id == Subscription.id,
                    other.status == InvoiceStatus.OPEN,
                    other.attempt_count > 0,
                )
            ),
        )
        .values(status=SubscriptionStatus.ACTIVE)
        .execution_options(synchronize_session="fetch")
    )


def _set_subscription_status(
    session: Session,
    subscription_id: object,
    status: SubscriptionStatus,
    *,
    only_from: tuple[SubscriptionStatus, ...],
) -> None:
    # A conditional UPDATE rather than read-then-write: the API may change the subscription
    # concurrently, and its status must not be overwritten with a stale one.
    session.execute(
        update(Subscription)
        .where(Subscription.id == subscription_id, Subscription.status.in_(only_from))
        .values(status=status)
        .execution_options(synchronize_session="fetch")
    )


def settle_from_gateway(
    session: Session,
    *,
    payment_reference: str,
    succeeded: bool,
    failure_code: str | None,
    failure_message: str | None,
    now: datetime,
) -> bool:
    """Settle a pending payment from a gateway event; False if none is pending. Caller commits."""
    invoice_id = session.scalar(
        select(Payment.invoice_id).where(
            Payment.gateway_reference == payment_reference,
            Payment.status == PaymentStatus.PENDING,
        )
    )
    if invoice_id is None:
        return False
    invoice = session.scalars(
        select(Invoice).where(Invoice.id == invoice_id).with_for_update()
    ).one()
    # Read again under the invoice's lock: a concurrent delivery may have settled it already.
    payment = session.scalars(
        select(Payment).where(
            Payment.gateway_reference == payment_reference,
            Payment.status == PaymentStatus.PENDING,
        )
    ).first()
    if payment is None:
        return False
    if succeeded:
        settle_paid(session, invoice, payment, now=now)
    else:
        record_decline(
            session,
            invoice,
            payment,
            code=failure_code or "declined",
            message=failure_message,
            now=now,
        )
    return True
