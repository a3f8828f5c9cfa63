"""Customers and the saved payment method the worker charges off-session."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from services.billing.errors import NotFoundError
from services.billing.ids import new_id
from services.billing.models import Customer

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.orm import Session

    from services.billing.gateway import PaymentGateway


def create_customer(
    session: Session,
    gateway: PaymentGateway,
    *,
    email: str,
    name: str,
    payment_method: str | None,
    request_key: str,
) -> Customer:
    """Register the customer with the gateway, then record them.

    request_key is unique per client request, so a retried request finds the same gateway
    customer instead of creating a second one.
    """
    reference = gateway.create_customer(
        email=email,
        name=name,
        payment_method=payment_method,
        idempotency_key=f"billing-customer-{request_key}",
    )
    customer = Customer(
        id=new_id(),
        email=email,
        name=name,
        payment_method=payment_method,
        gateway_customer_id=reference,
        credit_balance=0,
    )
    session.add(customer)
    session.flush()
    return customer


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
