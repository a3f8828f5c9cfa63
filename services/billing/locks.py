"""Row locks the API takes, with the lock order every writer keeps.

Order: an invoice before its subscription, a subscription before its customer, several
customers in id order. The API locks invoices with NOWAIT: a request that meets a charge in
progress answers 409 at once rather than waiting out a gateway call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import ScalarResult, Select, select
from sqlalchemy.exc import OperationalError

from services.billing.errors import ConflictError, NotFoundError
from services.billing.models import Invoice, InvoiceStatus, Subscription

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.orm import Session

# PostgreSQL's lock_not_available, raised by FOR UPDATE NOWAIT.
LOCK_NOT_AVAILABLE = "55P03"


def lock_invoice(session: Session, invoice_id: uuid.UUID) -> Invoice:
    invoice = _nowait(session, select(Invoice).where(Invoice.id == invoice_id)).first()
    if invoice is None:
        raise NotFoundError("invoice", invoice_id)
    return invoice


def lock_open_invoices(session: Session, subscription_id: uuid.UUID) -> list[Invoice]:
    query = select(Invoice).where(
        Invoice.subscription_id == subscription_id, Invoice.status == InvoiceStatus.OPEN
    )
    return list(_nowait(session, query).all())


def lock_subscription(session: Session, subscription_id: uuid.UUID) -> Subscription:
    # Waits: subscription locks are only held for short, gateway-free transactions.
    subscription = session.scalars(
        select(Subscription).where(Subscription.id == subscription_id).with_for_update()
    ).first()
    if subscription is None:
        raise NotFoundError("subscription", subscription_id)
    return subscription


def _nowait(session: Session, query: Select[Invoice]) -> ScalarResult[Invoice]:
    try:
        return session.scalars(query.with_for_update(nowait=True))
    except OperationalError as error:
        if getattr(error.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise ConflictError(
                "payment_in_progress",
                "A payment for this invoice is being processed; retry shortly",
            ) from error
        raise
