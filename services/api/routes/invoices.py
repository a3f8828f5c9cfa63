"""Invoices: list, read, pay now, void."""

import uuid

from fastapi import APIRouter, Response, status
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from services.api import schemas
from services.api.dependencies import ADMIN_ONLY, AUTHORIZED, CurrentRuntime, DatabaseSession
from services.api.pagination import Cursor, Limit, paginate
from services.api.routes import error_responses
from services.billing import invoices
from services.billing.collection import FAILURE_OUTCOMES, CollectionOutcome
from services.billing.errors import ConflictError, PaymentDeclinedError
from services.billing.gateway import GatewayUnavailableError
from services.billing.models import Invoice, InvoiceStatus, Payment

router = APIRouter(
    prefix="/v1/invoices",
    tags=["invoices"],
    dependencies=AUTHORIZED,
    responses=error_responses(),
)


@router.get("")
def list_invoices(
    session: DatabaseSession,
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
    return paginate(session, query, Invoice.id, schemas.Invoice, limit=limit, cursor=cursor)


@router.get("/{invoice_id}")
def get_invoice(invoice_id: uuid.UUID, session: DatabaseSession) -> schemas.Invoice:
    return schemas.Invoice.model_validate(invoices.get_invoice(session, invoice_id))


@router.post(
    "/{invoice_id}/pay",
    responses={
        202: {"model": schemas.PaymentAttempt, "description": "Accepted; a webhook settles it"},
        **error_responses(402, 404, 409, 503),
    },
)
def pay_invoice(
    invoice_id: uuid.UUID,
    session: DatabaseSession,
    runtime: CurrentRuntime,
    response: Response,
) -> schemas.PaymentAttempt:
    """Charge the invoice now; a decline counts toward the dunning schedule."""
    invoice, outcome = invoices.pay_invoice(
        session, runtime.gateway, invoice_id, now=runtime.clock()
    )
    session.commit()
    if outcome in {CollectionOutcome.DECLINED, CollectionOutcome.EXHAUSTED}:
        failure = session.scalars(
            select(Payment.failure_message).where(
                Payment.invoice_id == invoice.id, Payment.attempt_number == invoice.attempt_count
            )
        ).first()
        raise PaymentDeclinedError("payment_declined", failure or "The payment was declined")
    if outcome in FAILURE_OUTCOMES:
        # No answer from the gateway; the same attempt is sent again by the worker.
        raise GatewayUnavailableError(invoice.last_error or "gateway unavailable")
    if outcome in {CollectionOutcome.VOIDED, CollectionOutcome.REFUNDING}:
        raise ConflictError("invoice_not_open", "The subscription was canceled; invoice voided")
    if outcome is CollectionOutcome.NEEDS_REVIEW:
        raise ConflictError(
            "payment_needs_review", "An earlier attempt's outcome is unknown; see the gateway"
        )
    if outcome is CollectionOutcome.PENDING:
        response.status_code = status.HTTP_202_ACCEPTED
    return schemas.PaymentAttempt(invoice=schemas.Invoice.model_validate(invoice), outcome=outcome)


@router.post("/{invoice_id}/void", dependencies=ADMIN_ONLY)
def void_invoice(
    invoice_id: uuid.UUID, session: DatabaseSession, runtime: CurrentRuntime
) -> schemas.Invoice:
    invoice = invoices.void_invoice(session, invoice_id, now=runtime.clock())
    session.commit()
    return schemas.Invoice.model_validate(invoice)
