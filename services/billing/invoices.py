"""What the API does to a single invoice: pay it now, or void it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import exists, select

from services.billing.collection import CollectionOutcome, attempt_collection, restore_if_settled
from services.billing.errors import ConflictError, NotFoundError
from services.billing.locks import lock_invoice
from services.billing.models import Invoice, InvoiceStatus, Payment, PaymentStatus

if TYPE_CHECKING:
    import uuid
    from datetime import datetime

    from sqlalchemy.orm import Session

    from services.billing.gateway import PaymentGateway


def pay_invoice(
    session: Session, gateway: PaymentGateway, invoice_id: uuid.UUID, *, now: datetime
) -> tuple[Invoice, CollectionOutcome]:
    """Attempt the charge now; it counts as an attempt of the dunning schedule."""
    invoice = _lock_collectible(session, invoice_id)
    return invoice, attempt_collection(session, gateway, invoice, now=now)


def void_invoice(session: Session, invoice_id: uuid.UUID, *, now: datetime) -> Invoice:
    invoice = _lock_collectible(session, invoice_id)
    invoice.status = InvoiceStatus.VOID
    invoice.voided_at = now
    invoice.next_attempt_at = None
    session.flush()
    if invoice.subscription_id is not None:
        restore_if_settled(session, invoice.subscription_id)
    return invoice


def get_invoice(session: Session, invoice_id: uuid.UUID) -> Invoice:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFoundError("invoice", invoice_id)
    return invoice


def _lock_collectible(session: Session, invoice_id: uuid.UUID) -> Invoice:
    invoice = lock_invoice(session, invoice_id)
    if invoice.status is not InvoiceStatus.OPEN:
        raise ConflictError("invoice_not_open", f"The invoice is {invoice.status.value}, not open")
    pending = session.scalar(
        select(
            exists().where(
                Payment.invoice_id == invoice.id, Payment.status == PaymentStatus.PENDING
            )
        )
    )
    if pending:
        # Charging again could take the money twice; the gateway's webhook settles it.
        raise ConflictError(
            "payment_pending", "A payment for this invoice is awaiting the gateway's result"
        )
    return invoice
