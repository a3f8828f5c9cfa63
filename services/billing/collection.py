"""Charging open invoices: the payment lifecycle, and the dunning schedule after a decline.

A charge moves through three steps, and no lock or transaction is held across a gateway call:

1. Claim (one short transaction, committed): the invoice gets a `pending` payment row carrying
   the attempt's idempotency key and a lease (`next_check_at`). At most one payment per invoice
   is pending (a unique index), so two workers or a worker and the API cannot both charge it.
2. Call the gateway, holding nothing.
3. Record the outcome (one short transaction per payment): succeeded, declined (dunning),
   pending at the gateway (checked again later), or unknown (an outage or an error: the same key
   is sent again later, so the gateway answers with the charge it already made, if any).

The reconciliation scan (`claim_due_checks`) drives every pending payment whose check is due:
a claim whose worker died (same key again), a charge the gateway is still processing (asked for
its status), and a refund owed. Settlement is only ever applied to an open invoice; money that
arrives for an invoice already paid or voided is refunded.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, select, tuple_, update
from sqlalchemy.orm import Session, aliased

from services.billing.gateway import (
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
    GatewayConfigurationError,
    GatewayIdempotencyConflictError,
    GatewayUnavailableError,
    PaymentGateway,
)
from services.billing.ids import new_id
from services.billing.invoicing import ScanPosition, void_open_invoice
from services.billing.models import (
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentStatus,
    Subscription,
    SubscriptionStatus,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

# After the n-th declined attempt, retry DUNNING_SCHEDULE[n - 1] later; a decline after the
# last retry makes the invoice uncollectible and cancels the subscription.
DUNNING_SCHEDULE = (timedelta(days=1), timedelta(days=3), timedelta(days=5))
# A gateway outage is not the customer's fault: retry soon, without counting an attempt.
GATEWAY_RETRY_DELAY = timedelta(minutes=5)
# How long a claimed attempt belongs to its worker before another sends its key again: longer
# than a gateway call can take (StripeGateway: 15 s timeout, one retry).
CLAIM_LEASE = timedelta(seconds=60)
# A charge the gateway accepted but has not settled is asked about this often; its webhook
# usually settles it first.
PROCESSING_CHECK_INTERVAL = timedelta(minutes=5)


class CollectionOutcome(StrEnum):
    PAID = "paid"
    DECLINED = "declined"
    # The last decline: the invoice is uncollectible and the subscription canceled.
    EXHAUSTED = "exhausted"
    PENDING = "pending"
    GATEWAY_UNAVAILABLE = "gateway_unavailable"
    # Our credentials or permissions were refused; retried later, no attempt counted.
    GATEWAY_MISCONFIGURED = "gateway_misconfigured"
    # An error nobody planned for; the payment is pushed back and tried again later.
    ERROR = "error"
    # The subscription was canceled meanwhile; nothing is owed for it any more.
    VOIDED = "voided"
    # The gateway refused to replay the attempt's key; automatic retries stop.
    NEEDS_REVIEW = "needs_review"
    # Money arrived for an invoice already settled; it is being given back.
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    # A webhook recorded this payment's outcome first.
    ALREADY_SETTLED = "already_settled"


# Outcomes that mean something is wrong on our side or the gateway's, not the customer's.
FAILURE_OUTCOMES = frozenset(
    {
        CollectionOutcome.GATEWAY_UNAVAILABLE,
        CollectionOutcome.GATEWAY_MISCONFIGURED,
        CollectionOutcome.ERROR,
    }
)


# What invoice.last_error starts with, per failure.
_ERROR_LABELS = {
    CollectionOutcome.GATEWAY_UNAVAILABLE: "gateway_unavailable",
    CollectionOutcome.GATEWAY_MISCONFIGURED: "gateway_misconfigured",
    CollectionOutcome.ERROR: "error",
    CollectionOutcome.NEEDS_REVIEW: "idempotency_conflict",
}


class Action(StrEnum):
    CHARGE = "charge"
    CHECK = "check"
    REFUND = "refund"


def idempotency_key(invoice: Invoice, attempt: int) -> str:
    return f"billing-invoice-{invoice.id}-attempt-{attempt}"


@dataclass(frozen=True)
class Attempt:
    """One gateway call a claim committed to making."""

    action: Action
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    # CHARGE: what to send; None when the customer has no payment method (a decline).
    request: ChargeRequest | None = None
    # CHECK and REFUND: the gateway's reference for the charge.
    reference: str | None = None
    amount: int = 0


@dataclass(frozen=True)
class GatewayAnswer:
    result: ChargeResult | None
    # Set when the call did not give an answer: an outcome in FAILURE_OUTCOMES or NEEDS_REVIEW.
    failure: CollectionOutcome | None = None
    message: str = ""


@dataclass(frozen=True)
class Claimed:
    attempts: list[Attempt]
    # Invoices voided because their subscription was canceled.
    voided: int
    handled: int
    position: ScanPosition | None


def claim_due_invoices(
    session: Session,
    *,
    gateway_name: str,
    now: datetime,
    limit: int,
    after: ScanPosition | None = None,
    lease: timedelta = CLAIM_LEASE,
) -> Claimed:
    """Start a new attempt on up to `limit` due open invoices no one else holds. Commits."""
    query = select(Invoice).where(
        Invoice.status == InvoiceStatus.OPEN, Invoice.next_attempt_at <= now
    )
    if after is not None:
        query = query.where(tuple_(Invoice.next_attempt_at, Invoice.id) > after)
    invoices = session.scalars(
        query.order_by(Invoice.next_attempt_at, Invoice.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not invoices:
        session.rollback()
        return Claimed([], 0, 0, after)
    last = invoices[-1]
    position = (last.next_attempt_at, last.id) if last.next_attempt_at else after
    canceled = set(
        session.scalars(
            select(Subscription.id).where(
                Subscription.id.in_({i.subscription_id for i in invoices if i.subscription_id}),
                Subscription.status == SubscriptionStatus.CANCELED,
            )
        )
    )
    in_flight = set(
        session.scalars(
            select(Payment.invoice_id).where(
                Payment.invoice_id.in_([invoice.id for invoice in invoices]),
                Payment.status == PaymentStatus.PENDING,
            )
        )
    )
    customers = _customers(session, [invoice.customer_id for invoice in invoices])
    attempts, voided = [], 0
    for invoice in invoices:
        invoice.next_attempt_at = None
        if invoice.subscription_id in canceled:
            void_open_invoice(session, invoice, now=now)
            voided += 1
            continue
        if invoice.id in in_flight:
            # That attempt is settled by its own check (claim_due_checks) or its webhook.
            continue
        payment = _new_attempt(session, invoice, gateway_name, expires=now + lease)
        attempts.append(_charge_attempt(invoice, payment, customers[invoice.customer_id]))
    session.commit()
    return Claimed(attempts, voided, len(invoices), position)


def claim_due_checks(
    session: Session,
    *,
    now: datetime,
    limit: int,
    after: ScanPosition | None = None,
    lease: timedelta = CLAIM_LEASE,
) -> Claimed:
    """Claim pending and refunding payments whose check is due (reconciliation). Commits."""
    query = select(Payment).where(
        Payment.status.in_((PaymentStatus.PENDING, PaymentStatus.REFUNDING)),
        Payment.next_check_at <= now,
    )
    if after is not None:
        query = query.where(tuple_(Payment.next_check_at, Payment.id) > after)
    payments = session.scalars(
        query.order_by(Payment.next_check_at, Payment.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not payments:
        session.rollback()
        return Claimed([], 0, 0, after)
    last = payments[-1]
    position = (last.next_check_at, last.id) if last.next_check_at else after
    invoices = {
        invoice.id: invoice
        for invoice in session.scalars(
            select(Invoice).where(Invoice.id.in_({payment.invoice_id for payment in payments}))
        )
    }
    customers = _customers(session, [invoice.customer_id for invoice in invoices.values()])
    attempts = []
    for payment in payments:
        payment.next_check_at = now + lease
        invoice = invoices[payment.invoice_id]
        if payment.status is PaymentStatus.REFUNDING and payment.gateway_reference:
            attempts.append(
                Attempt(
                    Action.REFUND,
                    payment.id,
                    invoice.id,
                    reference=payment.gateway_reference,
                    amount=payment.amount,
                )
            )
        elif payment.gateway_reference:
            attempts.append(
                Attempt(Action.CHECK, payment.id, invoice.id, reference=payment.gateway_reference)
            )
        elif invoice.status is not InvoiceStatus.OPEN:
            # Voided or paid while this attempt's outcome was unknown. Sending the key again
            # would make the charge if it never happened; if it did happen, its webhook
            # (it carries this payment's id) finds a failed payment and refunds it.
            _fail(payment, "abandoned", "The invoice was settled before the outcome was known.")
        else:
            attempts.append(_charge_attempt(invoice, payment, customers[invoice.customer_id]))
    session.commit()
    return Claimed(attempts, 0, len(payments), position)


def call_gateway(gateway: PaymentGateway, attempt: Attempt) -> GatewayAnswer:  # noqa: PLR0911 - one return per kind of answer
    """Make the attempt's gateway call; every error becomes an answer, none escapes."""
    try:
        if attempt.action is Action.REFUND:
            assert attempt.reference is not None  # noqa: S101 - set for every refund
            gateway.refund(
                reference=attempt.reference,
                amount=attempt.amount,
                idempotency_key=f"billing-refund-{attempt.payment_id}",
            )
            return GatewayAnswer(None)
        if attempt.action is Action.CHECK:
            assert attempt.reference is not None  # noqa: S101 - set for every check
            return GatewayAnswer(gateway.retrieve(attempt.reference))
        if attempt.request is None:
            return GatewayAnswer(
                ChargeResult(
                    ChargeOutcome.DECLINED,
                    None,
                    "payment_method_missing",
                    "No saved payment method.",
                )
            )
        return GatewayAnswer(gateway.charge(attempt.request))
    except GatewayUnavailableError as error:
        return GatewayAnswer(None, CollectionOutcome.GATEWAY_UNAVAILABLE, str(error))
    except GatewayConfigurationError as error:
        logger.error(  # noqa: TRY400 - expected; the message says all there is
            "gateway refused our credentials", extra={"error": str(error)}
        )
        return GatewayAnswer(None, CollectionOutcome.GATEWAY_MISCONFIGURED, str(error))
    except GatewayIdempotencyConflictError as error:
        return GatewayAnswer(None, CollectionOutcome.NEEDS_REVIEW, str(error))
    except Exception as error:
        # Whatever it was, this payment is pushed back and the worker goes on with the others.
        logger.exception("unexpected gateway error", extra={"payment_id": str(attempt.payment_id)})
        return GatewayAnswer(None, CollectionOutcome.ERROR, f"{type(error).__name__}: {error}")


def record(
    session: Session,
    attempt: Attempt,
    answer: GatewayAnswer,
    *,
    now: datetime,
) -> CollectionOutcome:
    """Apply a gateway answer to the payment and its invoice in one transaction. Commits."""
    invoice, payment = _lock(session, attempt.invoice_id, attempt.payment_id)
    outcome = _apply(session, invoice, payment, attempt, answer, now=now)
    session.commit()
    return outcome


def record_many(
    session: Session, answers: Sequence[tuple[Attempt, GatewayAnswer]], *, now: datetime
) -> list[CollectionOutcome]:
    """Apply several gateway answers in one short transaction. Commits.

    The invoices, then the payments, are locked in id order, so two of these never wait on
    each other in a cycle. If applying any answer fails, the whole transaction rolls back and
    the caller records them one by one, each in its own transaction.
    """
    invoice_ids = sorted({attempt.invoice_id for attempt, _ in answers})
    payment_ids = sorted({attempt.payment_id for attempt, _ in answers})
    invoices = {
        invoice.id: invoice
        for invoice in session.scalars(
            select(Invoice)
            .where(Invoice.id.in_(invoice_ids))
            .order_by(Invoice.id)
            .with_for_update()
        )
    }
    payments = {
        payment.id: payment
        for payment in session.scalars(
            select(Payment)
            .where(Payment.id.in_(payment_ids))
            .order_by(Payment.id)
            .with_for_update()
        )
    }
    # No flush per payment: the changes go out together, as one executemany per table.
    with session.no_autoflush:
        outcomes = [
            _apply(
                session,
                invoices[attempt.invoice_id],
                payments[attempt.payment_id],
                attempt,
                answer,
                now=now,
                restore=False,
            )
            for attempt, answer in answers
        ]
    session.flush()
    restore_if_settled(
        session,
        sorted(
            {
                subscription_id
                for (attempt, _), outcome in zip(answers, outcomes, strict=True)
                if outcome is CollectionOutcome.PAID
                and (subscription_id := invoices[attempt.invoice_id].subscription_id)
            }
        ),
    )
    session.commit()
    return outcomes


def push_back(session: Session, attempt: Attempt, error: BaseException, *, now: datetime) -> None:
    """After recording failed: try this payment again later, in a transaction of its own."""
    session.rollback()
    session.execute(
        update(Payment)
        .where(Payment.id == attempt.payment_id)
        .values(next_check_at=now + GATEWAY_RETRY_DELAY)
    )
    session.execute(
        update(Invoice)
        .where(Invoice.id == attempt.invoice_id)
        .values(last_error=f"error: {type(error).__name__}: {error}"[:2000])
    )
    session.commit()


def _apply(  # noqa: PLR0911 - one return per state the payment moves to
    session: Session,
    invoice: Invoice,
    payment: Payment,
    attempt: Attempt,
    answer: GatewayAnswer,
    *,
    now: datetime,
    restore: bool = True,
) -> CollectionOutcome:
    if attempt.action is Action.REFUND:
        if payment.status is not PaymentStatus.REFUNDING:
            return CollectionOutcome.ALREADY_SETTLED
        if answer.failure is not None:
            payment.next_check_at = now + GATEWAY_RETRY_DELAY
            payment.failure_message = answer.message
            return answer.failure
        payment.status = PaymentStatus.REFUNDED
        payment.next_check_at = None
        return CollectionOutcome.REFUNDED
    if payment.status is not PaymentStatus.PENDING:
        late_success = (
            payment.status is PaymentStatus.FAILED
            and answer.result is not None
            and answer.result.outcome is ChargeOutcome.SUCCEEDED
        )
        if late_success:
            # Given up on (abandoned after its lease) while the call was still out: the money
            # arrived all the same, so it pays the invoice if still open, else goes back.
            return apply_success(session, invoice, payment, now=now, restore=restore)
        return CollectionOutcome.ALREADY_SETTLED
    if answer.failure is not None:
        invoice.last_error = f"{_ERROR_LABELS[answer.failure]}: {answer.message}"[:2000]
        if answer.failure is CollectionOutcome.NEEDS_REVIEW:
            # A new key could charge a second time; only a person can tell whether the first
            # request went through (the gateway's dashboard shows it).
            payment.next_check_at = None
        else:
            payment.next_check_at = now + GATEWAY_RETRY_DELAY
        return answer.failure
    result = answer.result
    assert result is not None  # noqa: S101 - an answer without a failure has a result
    if result.reference and not payment.gateway_reference:
        payment.gateway_reference = result.reference
    if result.outcome is ChargeOutcome.SUCCEEDED:
        return apply_success(session, invoice, payment, now=now, restore=restore)
    if result.outcome is ChargeOutcome.PENDING:
        # Settled by its webhook, or asked about again by the reconciliation scan.
        payment.next_check_at = now + PROCESSING_CHECK_INTERVAL
        return CollectionOutcome.PENDING
    return record_decline(
        session,
        invoice,
        payment,
        code=result.failure_code or "declined",
        message=result.failure_message,
        now=now,
    )


def apply_success(
    session: Session, invoice: Invoice, payment: Payment, *, now: datetime, restore: bool = True
) -> CollectionOutcome:
    """Money arrived for this payment: it pays the invoice if open, else it goes back.

    An open invoice has no successful payment (settling one is what closes it, and a unique
    index allows one), so an open invoice is paid by this one.
    """
    payment.failure_code = payment.failure_message = None
    if invoice.status is InvoiceStatus.OPEN:
        settle_paid(session, invoice, payment, now=now, restore=restore)
        return CollectionOutcome.PAID
    logger.warning(
        "payment succeeded for a settled invoice; refunding",
        extra={"invoice_id": str(invoice.id), "payment_id": str(payment.id)},
    )
    payment.status = PaymentStatus.REFUNDING
    payment.next_check_at = now
    return CollectionOutcome.REFUNDING


def settle_paid(
    session: Session, invoice: Invoice, payment: Payment, *, now: datetime, restore: bool = True
) -> None:
    """Mark both paid; `restore=False` leaves restore_if_settled to the caller (batches)."""
    payment.status = PaymentStatus.SUCCEEDED
    payment.next_check_at = None
    invoice.status = InvoiceStatus.PAID
    invoice.attempt_count = max(invoice.attempt_count, payment.attempt_number)
    invoice.paid_at = now
    invoice.next_attempt_at = None
    invoice.last_error = None
    if restore and invoice.subscription_id is not None:
        session.flush()
        restore_if_settled(session, [invoice.subscription_id])


def record_decline(
    session: Session,
    invoice: Invoice,
    payment: Payment,
    *,
    code: str,
    message: str | None,
    now: datetime,
) -> CollectionOutcome:
    _fail(payment, code, message)
    if invoice.status is not InvoiceStatus.OPEN:
        # Voided while the attempt was out; nothing more to collect.
        return CollectionOutcome.VOIDED
    invoice.attempt_count = max(invoice.attempt_count, payment.attempt_number)
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


def restore_if_settled(session: Session, subscription_ids: Sequence[uuid.UUID]) -> None:
    """A past-due subscription is active again once no open invoice has a failed attempt."""
    if not subscription_ids:
        return
    other = aliased(Invoice)
    session.execute(
        update(Subscription)
        .where(
            Subscription.id.in_(subscription_ids),
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


def apply_gateway_event(
    session: Session,
    *,
    payment_reference: str | None,
    payment_id: str | None,
    succeeded: bool,
    failure_code: str | None,
    failure_message: str | None,
    now: datetime,
) -> CollectionOutcome | None:
    """Apply a payment webhook; None when it matches no payment (the caller answers 5xx so the
    gateway delivers it again). The caller commits."""
    found = None
    if payment_reference:
        found = session.scalars(
            select(Payment).where(Payment.gateway_reference == payment_reference)
        ).first()
    if found is None and payment_id:
        try:
            found = session.get(Payment, uuid.UUID(payment_id))
        except ValueError:
            found = None
    if found is None:
        return None
    invoice, payment = _lock(session, found.invoice_id, found.id)
    if payment_reference and not payment.gateway_reference:
        payment.gateway_reference = payment_reference
    if succeeded:
        if payment.status in {PaymentStatus.PENDING, PaymentStatus.FAILED}:
            return apply_success(session, invoice, payment, now=now)
        return CollectionOutcome.ALREADY_SETTLED
    if payment.status is PaymentStatus.PENDING:
        return record_decline(
            session,
            invoice,
            payment,
            code=failure_code or "declined",
            message=failure_message,
            now=now,
        )
    return CollectionOutcome.ALREADY_SETTLED


def start_attempt(
    session: Session, invoice: Invoice, *, gateway_name: str, now: datetime
) -> Attempt:
    """Claim a new attempt on an invoice whose row lock the caller holds. Commits."""
    payment = _new_attempt(session, invoice, gateway_name, expires=now + CLAIM_LEASE)
    invoice.next_attempt_at = None
    attempt = _charge_attempt(invoice, payment, session.get_one(Customer, invoice.customer_id))
    session.commit()
    return attempt


def _new_attempt(
    session: Session, invoice: Invoice, gateway_name: str, *, expires: datetime
) -> Payment:
    """The pending payment of the invoice's next attempt, leased until `expires`."""
    attempt = invoice.attempt_count + 1
    payment = Payment(
        id=new_id(),
        tenant_id=invoice.tenant_id,
        invoice_id=invoice.id,
        attempt_number=attempt,
        amount=invoice.amount_due,
        currency=invoice.currency,
        status=PaymentStatus.PENDING,
        gateway=gateway_name,
        idempotency_key=idempotency_key(invoice, attempt),
        next_check_at=expires,
    )
    session.add(payment)
    return payment


def _charge_attempt(invoice: Invoice, payment: Payment, customer: Customer) -> Attempt:
    request = None
    if customer.payment_method is not None:
        request = ChargeRequest(
            amount=payment.amount,
            currency=payment.currency,
            payment_method=customer.payment_method,
            customer_reference=customer.gateway_customer_id,
            description=f"Invoice {invoice.id}",
            invoice_id=str(invoice.id),
            idempotency_key=payment.idempotency_key,
            payment_id=str(payment.id),
        )
    return Attempt(Action.CHARGE, payment.id, invoice.id, request=request)


def _customers(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Customer]:
    return {
        customer.id: customer
        for customer in session.scalars(select(Customer).where(Customer.id.in_(set(ids))))
    }


def _lock(
    session: Session, invoice_id: uuid.UUID, payment_id: uuid.UUID
) -> tuple[Invoice, Payment]:
    # The invoice first, as everywhere (services.billing.locks); both locks are held only for
    # this short transaction.
    invoice = session.scalars(
        select(Invoice).where(Invoice.id == invoice_id).with_for_update()
    ).one()
    payment = session.scalars(
        select(Payment).where(Payment.id == payment_id).with_for_update()
    ).one()
    return invoice, payment


def _fail(payment: Payment, code: str, message: str | None) -> None:
    payment.status = PaymentStatus.FAILED
    payment.failure_code = code
    payment.failure_message = message
    payment.next_check_at = None


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
