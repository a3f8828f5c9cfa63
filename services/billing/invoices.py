"""What the API does to a single invoice: pay it now, or void it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import exists, select

from services.billing.collection import (
    CollectionOutcome,
    call_gateway,
    record,
    restore_if_settled,
    start_attempt,
)
from services.billing.errors import ConflictError, NotFoundError
from services.billing.invoicing import void_open_invoice
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
    """Attempt the charge now; it counts as an attempt of the dunning schedule.

    The attempt is claimed and committed first, the gateway is called with no transaction
    open, and the outcome is recorded in a transaction of its own.
    """
    invoice = _lock_open(session, invoice_id)
    if _has_pending_payment(session, invoice):
        # Charging again could take the money twice; its webhook or reconciliation settles it.
        raise ConflictError(
            "payment_pending", "A payment for this invoice is awaiting the gateway's result"
        )
    attempt = start_attempt(session, invoice, gateway_name=gateway.name, now=now)
    outcome = record(session, attempt, call_gateway(gateway, attempt), now=now)
    return session.get_one(Invoice, invoice_id), outcome


def void_invoice(session: Session, invoice_id: uuid.UUID, *, now: datetime) -> Invoice:
    """Void an open invoice and give back the credit applied to it, in one transaction.

    A payment still pending for it is refunded if it succeeds.
    """
    invoice = _lock_open(session, invoice_id)
    void_open_invoice(session, invoice, now=now)
    if invoice.subscription_id is not None:
        restore_if_settled(session, [invoice.subscription_id])
    return invoice


def get_invoice(session: Session, invoice_id: uuid.UUID) -> Invoice:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFoundError("invoice", invoice_id)
    return invoice


def _lock_open(session: Session, invoice_id: uuid.UUID) -> Invoice:
    invoice = lock_invoice(session, invoice_id)
    if invoice.status is not InvoiceStatus.OPEN:
        raise ConflictError("invoice_not_open", f"The invoice is {invoice.status.value}, not open")
    return invoice


def _has_pending_payment(session: Session, invoice: Invoice) -> bool:
    return bool(
        session.scalar(
            select(
                exists().where(
                    Payment.invoice_id == invoice.id, Payment.status == PaymentStatus.PENDING
                )
            )
        )
    )
