"""Payments: every charge attempt on an invoice, successful or not."""

import uuid

from fastapi import APIRouter
from sqlalchemy import select

from services.api import schemas
from services.api.dependencies import AUTHORIZED, DatabaseSession
from services.api.pagination import Cursor, Limit, paginate
from services.api.routes import error_responses
from services.billing.errors import NotFoundError
from services.billing.models import Invoice, Payment

router = APIRouter(
    prefix="/v1/payments",
    tags=["payments"],
    dependencies=AUTHORIZED,
    responses=error_responses(),
)


@router.get("")
def list_payments(
    session: DatabaseSession,
    invoice_id: uuid.UUID | None = None,
    customer_id: uuid.UUID | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> schemas.Page[schemas.Payment]:
    query = select(Payment)
    if invoice_id is not None:
        query = query.where(Payment.invoice_id == invoice_id)
    if customer_id is not None:
        query = query.join(Invoice, Invoice.id == Payment.invoice_id).where(
            Invoice.customer_id == customer_id
        )
    return paginate(session, query, Payment.id, schemas.Payment, limit=limit, cursor=cursor)


@router.get("/{payment_id}")
def get_payment(payment_id: uuid.UUID, session: DatabaseSession) -> schemas.Payment:
    payment = session.get(Payment, payment_id)
    if payment is None:
        raise NotFoundError("payment", payment_id)
    return schemas.Payment.model_validate(payment)
