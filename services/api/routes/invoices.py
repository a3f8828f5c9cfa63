"""Invoices: list, read, pay now, void."""

import uuid

from fastapi import APIRouter, Response, status
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from services.api import schemas
from services.api.dependencies import (
    ADMIN_ONLY,
    AUTHORIZED,
    CurrentRuntime,
    DatabaseSession,
    ReadSession,
    read,
)
from services.api.idempotency import Idempotent
from services.api.pagination import Cursor, Limit, paginate
from services.api.routes import error_responses
from services.billing import invoices
from services.billing.collection import FAILURE_OUTCOMES, CollectionOutcome
from services.billing.gateway import GatewayUnavailableError
from services.billing.models import Invoice, InvoiceStatus, Payment

router = APIRouter(
    prefix="/v1/invoices",
    tags=["invoices"],
    dependencies=AUTHORIZED,
    responses=error_responses(),
)


@router.get("")
async def list_invoices(
    session: ReadSession,
    customer_id: uuid.UUID | None = None,
    subscription_id: uuid.UUID | None = None,
    status: InvoiceStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> schemas.Page[schemas.Invoice]:
    query = select(Invoice).options(selectinload(Invoice.lines))
    if customer_id is not None:
        query = query.where(Invoice.customer_id == customer_id)
    if subscription_id is not None:
        query = query.where(Invoice.subscription_id == subscription_id)
    if status is not None:
        query = query.where(Invoice.status == status)
    return await read(
        session,
        lambda s: paginate(s, query, Invoice.id, schemas.Invoice, limit=limit, cursor=cursor),
    )


@router.get("/{invoice_id}")
async def get_invoice(invoice_id: uuid.UUID, session: ReadSession) -> schemas.Invoice:
    return await read(
        session, lambda s: schemas.Invoice.model_validate(invoices.get_invoice(s, invoice_id))
    )


@router.post(
    "/{invoice_id}/pay",
    response_model=schemas.PaymentAttempt,
    responses={
        202: {"model": schemas.PaymentAttempt, "description": "Accepted; a webhook settles it"},
        **error_responses(402, 404, 409, 503),
    },
)
def pay_invoice(
    invoice_id: uuid.UUID,
    session: DatabaseSession,
    runtime: CurrentRuntime,
    idempotency: Idempotent,
) -> Response:
    """Charge the invoice now; a decline counts toward the dunning schedule."""
    invoice, outcome = invoices.pay_invoice(
        session, runtime.gateway, invoice_id, now=runtime.clock()
    )
    # The attempt was claimed and its outcome recorded in transactions of their own (a gateway
    # call holds none open); the answer is stored next, so a retry replays it. A crash in
    # between leaves the claim unanswered: after STALE_CLAIM the same request runs again and
    # finds the invoice settled, never charging twice.
    if outcome in {CollectionOutcome.DECLINED, CollectionOutcome.EXHAUSTED}:
        failure = session.scalars(
            select(Payment.failure_message).where(
                Payment.invoice_id == invoice.id, Payment.attempt_number == invoice.attempt_count
            )
        ).first()
        return idempotency.respond_error(
            402, "payment_declined", failure or "The payment was declined"
        )
    if outcome in FAILURE_OUTCOMES:
        # No answer from the gateway; the worker sends the same attempt again, and the same
        # key may ask again: nothing about this answer is final.
        idempotency.release()
        session.commit()
        raise GatewayUnavailableError(invoice.last_error or "gateway unavailable")
    if outcome in {CollectionOutcome.VOIDED, CollectionOutcome.REFUNDING}:
        return idempotency.respond_error(
            409, "invoice_not_open", "The subscription was canceled; invoice voided"
        )
    if outcome is CollectionOutcome.NEEDS_REVIEW:
        return idempotency.respond_error(
            409,
            "payment_needs_review",
            "An earlier attempt's outcome is unknown; see the gateway",
        )
    attempt = schemas.PaymentAttempt(
        invoice=schemas.Invoice.model_validate(invoice), outcome=outcome
    )
    status_code = status.HTTP_202_ACCEPTED if outcome is CollectionOutcome.PENDING else 200
    return idempotency.respond(attempt, status=status_code)


@router.post("/{invoice_id}/void", response_model=schemas.Invoice, **ADMIN_ONLY)
def void_invoice(
    invoice_id: uuid.UUID,
    session: DatabaseSession,
    runtime: CurrentRuntime,
    idempotency: Idempotent,
) -> Response:
    invoice = invoices.void_invoice(session, invoice_id, now=runtime.clock())
    return idempotency.respond(schemas.Invoice.model_validate(invoice))
