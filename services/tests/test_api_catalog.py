"""Customers and plans over HTTP, with pagination."""

from __future__ import annotations

from services.tests.conftest import BillingClient
from services.tests.factories import create_customer, create_plan


def test_customer_round_trip(client: BillingClient) -> None:
    created = create_customer(client, payment_method="pm_card_visa")
    assert created["credit_balance"] == 0
    assert created["currency"] is None
    fetched = client.get(f"/v1/customers/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


def test_customer_update_changes_only_given_fields(client: BillingClient) -> None:
    created = create_customer(client, name="Grace")
    response = client.patch(
        f"/v1/customers/{created['id']}", json={"payment_method": "pm_card_chargeDeclined"}
    )
    assert response.status_code == 200
    assert response.json()["payment_method"] == "pm_card_chargeDeclined"
    assert response.json()["name"] == "Grace"


def test_plan_keeps_integer_minor_units(client: BillingClient) -> None:
    plan = create_plan(client, amount=1999, currency="JPY", interval="year", trial_days=14)
    assert plan["amount"] == 1999
    assert isinstance(plan["amount"], int)
    assert plan["currency"] == "JPY"
    assert plan["interval"] == "year"
    assert plan["trial_days"] == 14
    assert client.get(f"/v1/plans/{plan['id']}").json() == plan


def test_pages_walk_every_item_once_in_creation_order(client: BillingClient) -> None:
    created = [create_customer(client, name=f"Customer{index}")["id"] for index in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/customers", params=params).json()
        pages += 1
        seen.extend(item["id"] for item in page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == created
    assert pages == 3


def test_plans_list_is_paginated(client: BillingClient) -> None:
    for index in range(3):
        create_plan(client, name=f"Plan {index}")
    page = client.get("/v1/plans", params={"limit": 2}).json()
    assert len(page["data"]) == 2
    assert page["has_more"] is True
