"""Payments: every charge attempt on an invoice, successful or not."""

import uuid

from fastapi import APIRouter
from sqlalchemy import select

from services.api import schemas
from services.api.dependencies import (
    AUTHORIZED,
    CurrentPrincipal,
    CurrentRuntime,
    ReadSession,
    read,
)
from services.api.fast import fast_path
from services.api.pagination import Cursor, Limit, paginate
from services.api.reads import SingleRow
from services.api.routes import error_responses
from services.billing.models import Invoice, Payment

router = APIRouter(
    prefix="/v1/payments",
    tags=["payments"],
    dependencies=AUTHORIZED,
    responses=error_responses(),
)
# Also served by services/api/fast.py, without FastAPI, when the request is sound.
PAYMENT = SingleRow(Payment, schemas.Payment, resource="payment")


@router.get("")
async def list_payments(
    session: ReadSession,
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
    return await read(
        session,
        lambda s: paginate(s, query, Payment.id, schemas.Payment, limit=limit, cursor=cursor),
    )


@router.get("/{payment_id}")
@fast_path(PAYMENT)
async def get_payment(
    payment_id: uuid.UUID, runtime: CurrentRuntime, principal: CurrentPrincipal
) -> schemas.Payment:
    return await runtime.rows.one(PAYMENT, principal.tenant_id, payment_id)
