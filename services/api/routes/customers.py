"""Customers and their saved payment method."""

import uuid

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from services.api import schemas
from services.api.dependencies import (
    AUTHORIZED,
    CurrentPrincipal,
    CurrentRuntime,
    DatabaseSession,
    ReadSession,
    read,
)
from services.api.fast import fast_path
from services.api.fast_writes import fast_write
from services.api.pagination import Cursor, Limit, paginate
from services.api.reads import SingleRow
from services.api.routes import error_responses
from services.api.writes import ClaimedWrite
from services.billing import customers
from services.billing.models import Customer

router = APIRouter(
    prefix="/v1/customers",
    tags=["customers"],
    dependencies=AUTHORIZED,
    responses=error_responses(),
)
# Also served by services/api/fast.py, without FastAPI, when the request is sound.
CUSTOMER = SingleRow(Customer, schemas.Customer, resource="customer")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=schemas.Customer)
@fast_write(schemas.CustomerCreate)
async def create_customer(
    body: schemas.CustomerCreate, runtime: CurrentRuntime, claimed: ClaimedWrite
) -> Response:
    # On the event loop: the claim, the row and the answer on an asyncio connection
    # (services/api/writes.py), the gateway without blocking the loop.
    row = await customers.register_customer(
        runtime.gateway,
        email=body.email,
        name=body.name,
        payment_method=body.payment_method,
        request_key=f"{claimed.tenant_id}:{claimed.key}",
        created_at=claimed.claimed_at,
    )
    answer = schemas.Customer.model_validate(row)
    return await claimed.respond(answer, status=201, rows=[(Customer, row)])


@router.get("")
async def list_customers(
    session: ReadSession, limit: Limit = 20, cursor: Cursor = None
) -> schemas.Page[schemas.Customer]:
    return await read(
        session,
        lambda s: paginate(
            s, select(Customer), Customer.id, schemas.Customer, limit=limit, cursor=cursor
        ),
    )


@router.get("/{customer_id}")
@fast_path(CUSTOMER)
async def get_customer(
    customer_id: uuid.UUID, runtime: CurrentRuntime, principal: CurrentPrincipal
) -> schemas.Customer:
    return await runtime.rows.one(CUSTOMER, principal.tenant_id, customer_id)


@router.patch("/{customer_id}")
def update_customer(
    customer_id: uuid.UUID,
    body: schemas.CustomerUpdate,
    session: DatabaseSession,
    runtime: CurrentRuntime,
) -> schemas.Customer:
    customer = customers.update_customer(
        session,
        runtime.gateway,
        customer_id,
        email=body.email,
        name=body.name,
        payment_method=body.payment_method,
    )
    session.commit()
    return schemas.Customer.model_validate(customer)
