"""Customers and the saved payment method the worker charges off-session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from services.billing.errors import NotFoundError
from services.billing.ids import new_id
from services.billing.models import Customer

if TYPE_CHECKING:
    import uuid
    from datetime import datetime

    from sqlalchemy.orm import Session

    from services.billing.gateway import PaymentGateway


async def register_customer(
    gateway: PaymentGateway,
    *,
    email: str,
    name: str,
    payment_method: str | None,
    request_key: str,
    created_at: datetime,
) -> dict[str, Any]:
    """Register the customer with the gateway; the row that records them, by column.

    request_key is unique per client request, so a retried request finds the same gateway
    customer instead of creating a second one. created_at is the recording transaction's now().
    """
    reference = await gateway.create_customer_async(
        email=email,
        name=name,
        payment_method=payment_method,
        idempotency_key=f"billing-customer-{request_key}",
    )
    return {
        "id": new_id(),
        "email": email,
        "name": name,
        "payment_method": payment_method,
        "gateway_customer_id": reference,
        "currency": None,
        "credit_balance": 0,
        "debit_balance": 0,
        "created_at": created_at,
    }


def update_customer(
    session: Session,
    gateway: PaymentGateway,
    customer_id: uuid.UUID,
    *,
    email: str | None,
    name: str | None,
    payment_method: str | None,
) -> Customer:
    customer = session.scalars(
        select(Customer).where(Customer.id == customer_id).with_for_update()
    ).first()
    if customer is None:
        raise NotFoundError("customer", customer_id)
    if email is not None:
        customer.email = email
    if name is not None:
        customer.name = name
    if payment_method is not None and payment_method != customer.payment_method:
        if customer.gateway_customer_id:
            gateway.attach_payment_method(
                customer_reference=customer.gateway_customer_id, payment_method=payment_method
            )
        customer.payment_method = payment_method
    session.flush()
    return customer


def get_customer(session: Session, customer_id: uuid.UUID) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFoundError("customer", customer_id)
    return customer
