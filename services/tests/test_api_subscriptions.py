"""Subscriptions over HTTP: start, proration, cancellation, pause and resume."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.tests.conftest import BillingClient
from services.tests.factories import create_customer, create_plan, subscribe


def invoices_of(client: BillingClient, subscription: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.get("/v1/invoices", params={"subscription_id": subscription["id"]})
    return list(response.json()["data"])


def test_subscription_without_trial_is_invoiced_for_its_first_period(
    client: BillingClient,
) -> None:
    customer = create_customer(client)
    plan = create_plan(client, amount=3000)
    subscription = subscribe(client, customer, plan)
    assert subscription["status"] == "active"
    [invoice] = invoices_of(client, subscription)
    assert invoice["kind"] == "cycle"
    assert invoice["status"] == "open"
    assert invoice["amount_due"] == 3000
    assert invoice["period_start"] == subscription["current_period_start"]
    assert invoice["period_end"] == subscription["current_period_end"]
    assert [line["amount"] for line in invoice["lines"]] == [3000]
    # The first subscription fixes the customer's currency.
    assert client.get(f"/v1/customers/{customer['id']}").json()["currency"] == "USD"


def test_trial_issues_no_invoice_until_it_ends(client: BillingClient) -> None:
    subscription = subscribe(client, create_customer(client), create_plan(client, trial_days=14))
    assert subscription["status"] == "trialing"
    start = datetime.fromisoformat(subscription["current_period_start"])
    end = datetime.fromisoformat(subscription["current_period_end"])
    assert end - start == timedelta(days=14)
    assert invoices_of(client, subscription) == []


def pay_first_invoice(client: BillingClient, subscription: dict[str, Any]) -> None:
    [invoice] = invoices_of(client, subscription)
    paid = client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    assert paid.status_code == 200, paid.text


def test_upgrade_mid_period_invoices_the_prorated_difference(client: BillingClient) -> None:
    customer = create_customer(client)
    basic = create_plan(client, amount=1000, name="Basic")
    pro = create_plan(client, amount=4000, name="Pro")
    subscription = subscribe(client, customer, basic)
    pay_first_invoice(client, subscription)
    response = client.post_new(
        f"/v1/subscriptions/{subscription['id']}/change-plan", {"plan_id": pro["id"]}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["subscription"]["plan_id"] == pro["id"]
    invoice = result["invoice"]
    assert invoice["kind"] == "proration"
    credit, charge = (line["amount"] for line in invoice["lines"])
    # Changed moments after the period began: nearly the whole of each price.
    assert -1000 <= credit <= -990
    assert 3980 <= charge <= 4000
    assert invoice["subtotal"] == credit + charge
    assert invoice["amount_due"] == credit + charge
    assert invoice["status"] == "open"


def test_downgrade_mid_period_becomes_credit_for_the_next_invoice(
    client: BillingClient,
) -> None:
    customer = create_customer(client)
    pro = create_plan(client, amount=4000, name="Pro")
    basic = create_plan(client, amount=1000, name="Basic")
    subscription = subscribe(client, customer, pro)
    pay_first_invoice(client, subscription)
    response = client.post_new(
        f"/v1/subscriptions/{subscription['id']}/change-plan", {"plan_id": basic["id"]}
    )
    invoice = response.json()["invoice"]
    assert invoice["subtotal"] < 0
    assert invoice["amount_due"] == 0
    assert invoice["status"] == "paid"
    balance = client.get(f"/v1/customers/{customer['id']}").json()["credit_balance"]
    assert balance == -invoice["subtotal"]


def test_plan_change_refuses_a_different_currency(client: BillingClient) -> None:
    customer = create_customer(client)
    subscription = subscribe(client, customer, create_plan(client, currency="USD"))
    euro_plan = create_plan(client, currency="EUR")
    response = client.post_new(
        f"/v1/subscriptions/{subscription['id']}/change-plan", {"plan_id": euro_plan["id"]}
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "currency_mismatch"


def test_cancel_at_period_end_keeps_the_subscription_active(client: BillingClient) -> None:
    subscription = subscribe(client, create_customer(client), create_plan(client))
    response = client.post_new(
        f"/v1/subscriptions/{subscription['id']}/cancel", {"at_period_end": True}
    )
    assert response.status_code == 200
    assert response.json()["status"] == "active"
    assert response.json()["cancel_at_period_end"] is True


def test_cancel_now_voids_what_is_open(client: BillingClient) -> None:
    subscription = subscribe(client, create_customer(client), create_plan(client))
    response = client.post_new(
        f"/v1/subscriptions/{subscription['id']}/cancel", {"at_period_end": False}
    )
    assert response.json()["status"] == "canceled"
    assert response.json()["cancellation_reason"] == "canceled_by_request"
    assert [invoice["status"] for invoice in invoices_of(client, subscription)] == ["void"]
    again = client.post_new(
        f"/v1/subscriptions/{subscription['id']}/cancel", {"at_period_end": False}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "subscription_canceled"


def test_pause_and_resume_within_the_paid_period(client: BillingClient) -> None:
    subscription = subscribe(client, create_customer(client), create_plan(client))
    paused = client.post_new(f"/v1/subscriptions/{subscription['id']}/pause")
    assert paused.json()["status"] == "paused"
    assert paused.json()["paused_at"] is not None
    twice = client.post_new(f"/v1/subscriptions/{subscription['id']}/pause")
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "subscription_not_pausable"
    resumed = client.post_new(f"/v1/subscriptions/{subscription['id']}/resume")
    assert resumed.json()["status"] == "active"
    # Still inside the paid period: no new invoice.
    assert resumed.json()["current_period_end"] == subscription["current_period_end"]
    assert len(invoices_of(client, subscription)) == 1


def test_list_filters_by_customer_and_status(client: BillingClient) -> None:
    plan = create_plan(client)
    first = subscribe(client, create_customer(client, name="First"), plan)
    second_customer = create_customer(client, name="Second")
    subscribe(client, second_customer, plan)
    client.post_new(f"/v1/subscriptions/{first['id']}/pause")
    by_customer = client.get("/v1/subscriptions", params={"customer_id": second_customer["id"]})
    assert [item["customer_id"] for item in by_customer.json()["data"]] == [second_customer["id"]]
    paused = client.get("/v1/subscriptions", params={"status": "paused"}).json()["data"]
    assert [item["id"] for item in paused] == [first["id"]]
