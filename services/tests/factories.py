"""Builders for test data, over HTTP (through the API) or straight into the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from services.billing.ids import new_id
from services.billing.models import (
    Customer,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from services.billing.periods import BillingInterval

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from services.tests.conftest import BillingClient


def create_customer(
    client: BillingClient, *, payment_method: str | None = "pm_card_visa", name: str = "Ada"
) -> dict[str, Any]:
    body: dict[str, Any] = {"email": f"{name.lower()}@example.com", "name": name}
    if payment_method is not None:
        body["payment_method"] = payment_method
    response = client.post_new("/v1/customers", body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_plan(
    client: BillingClient,
    *,
    amount: int = 3000,
    currency: str = "USD",
    interval: str = "month",
    trial_days: int = 0,
    name: str = "Pro",
) -> dict[str, Any]:
    response = client.post_new(
        "/v1/plans",
        {
            "name": name,
            "amount": amount,
            "currency": currency,
            "interval": interval,
            "trial_days": trial_days,
        },
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def subscribe(
    client: BillingClient, customer: dict[str, Any], plan: dict[str, Any]
) -> dict[str, Any]:
    response = client.post_new(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


# The tenant rows seeded straight into the database belong to: the test client's.
SEEDED_TENANT = "merchant-1"


def seed_due_subscriptions(
    session: Session,
    count: int,
    *,
    now: datetime,
    payment_method: str = "pm_card_visa",
    amount: int = 1500,
) -> list[Subscription]:
    """Active monthly subscriptions whose period ended a minute before `now`."""
    plan = Plan(
        id=new_id(),
        tenant_id=SEEDED_TENANT,
        name="Seeded",
        amount=amount,
        currency="USD",
        interval=BillingInterval.MONTH,
        trial_days=0,
    )
    session.add(plan)
    subscriptions = []
    period_end = now - timedelta(minutes=1)
    for index in range(count):
        customer = Customer(
            id=new_id(),
            tenant_id=SEEDED_TENANT,
            email=f"seeded-{index}@example.com",
            name=f"Seeded {index}",
            payment_method=payment_method,
            gateway_customer_id=f"cus_seeded_{index}",
            currency="USD",
            credit_balance=0,
        )
        subscription = Subscription(
            id=new_id(),
            tenant_id=SEEDED_TENANT,
            customer_id=customer.id,
            plan_id=plan.id,
            status=SubscriptionStatus.ACTIVE,
            billing_anchor=period_end - timedelta(days=31),
            current_period_start=period_end - timedelta(days=31),
            current_period_end=period_end,
            cancel_at_period_end=False,
        )
        session.add_all([customer, subscription])
        subscriptions.append(subscription)
    session.commit()
    return subscriptions
