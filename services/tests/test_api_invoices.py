"""Invoices and payments over HTTP: pay, decline, void, and webhook settlement."""

from __future__ import annotations

from typing import Any

from services.tests.conftest import WEBHOOK_SECRET, BillingClient
from services.tests.factories import create_customer, create_plan, subscribe
from services.tests.webhook_signing import signed_event


def first_invoice(client: BillingClient, payment_method: str) -> dict[str, Any]:
    customer = create_customer(client, payment_method=payment_method)
    subscription = subscribe(client, customer, create_plan(client, amount=2500))
    response = client.get("/v1/invoices", params={"subscription_id": subscription["id"]})
    [invoice] = response.json()["data"]
    return dict(invoice)


def test_pay_charges_once_and_marks_paid(client: BillingClient) -> None:
    invoice = first_invoice(client, "pm_card_visa")
    response = client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "paid"
    assert response.json()["invoice"]["status"] == "paid"
    [payment] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    assert payment["status"] == "succeeded"
    assert payment["amount"] == 2500
    assert payment["gateway"] == "simulator"
    assert client.get(f"/v1/payments/{payment['id']}").json() == payment
    again = client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invoice_not_open"


def test_declined_payment_answers_402_and_starts_dunning(client: BillingClient) -> None:
    invoice = first_invoice(client, "pm_card_chargeDeclined")
    response = client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "payment_declined"
    assert "declined" in response.json()["error"]["message"]
    after = client.get(f"/v1/invoices/{invoice['id']}").json()
    assert after["status"] == "open"
    assert after["attempt_count"] == 1
    assert after["next_attempt_at"] is not None
    subscription = client.get(f"/v1/subscriptions/{invoice['subscription_id']}").json()
    assert subscription["status"] == "past_due"
    [payment] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    assert payment["status"] == "failed"
    assert payment["failure_code"] == "card_declined"


def test_gateway_outage_answers_503_and_counts_no_attempt(client: BillingClient) -> None:
    invoice = first_invoice(client, "pm_sim_unavailable")
    response = client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "gateway_unavailable"
    assert client.get(f"/v1/invoices/{invoice['id']}").json()["attempt_count"] == 0


def test_void_settles_a_past_due_subscription(client: BillingClient) -> None:
    invoice = first_invoice(client, "pm_card_chargeDeclined")
    client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    response = client.post_new(f"/v1/invoices/{invoice['id']}/void")
    assert response.status_code == 200
    assert response.json()["status"] == "void"
    subscription = client.get(f"/v1/subscriptions/{invoice['subscription_id']}").json()
    assert subscription["status"] == "active"
    again = client.post_new(f"/v1/invoices/{invoice['id']}/void")
    assert again.json()["error"]["code"] == "invoice_not_open"


def test_pending_payment_is_settled_by_a_signed_webhook(client: BillingClient) -> None:
    invoice = first_invoice(client, "pm_sim_processing")
    response = client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    assert response.status_code == 202
    assert response.json()["outcome"] == "pending"
    # A second charge while the first is unsettled could take the money twice.
    blocked = client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    assert blocked.status_code == 409
    assert blocked.json()["error"]["code"] == "payment_pending"
    [payment] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    payload, signature = signed_event(
        WEBHOOK_SECRET, "evt_1", "payment_intent.succeeded", {"id": payment["gateway_reference"]}
    )
    headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
    delivered = client.post("/v1/webhooks/stripe", content=payload, headers=headers)
    assert delivered.status_code == 200, delivered.text
    assert delivered.json() == {"received": True, "duplicate": False}
    assert client.get(f"/v1/invoices/{invoice['id']}").json()["status"] == "paid"
    redelivered = client.post("/v1/webhooks/stripe", content=payload, headers=headers)
    assert redelivered.json() == {"received": True, "duplicate": True}


def test_failed_payment_webhook_applies_the_decline(client: BillingClient) -> None:
    invoice = first_invoice(client, "pm_sim_processing")
    client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    [payment] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    payload, signature = signed_event(
        WEBHOOK_SECRET,
        "evt_2",
        "payment_intent.payment_failed",
        {
            "id": payment["gateway_reference"],
            "last_payment_error": {"decline_code": "insufficient_funds", "message": "No funds"},
        },
    )
    client.post("/v1/webhooks/stripe", content=payload, headers={"Stripe-Signature": signature})
    [failed] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    assert failed["status"] == "failed"
    assert failed["failure_code"] == "insufficient_funds"
    subscription = client.get(f"/v1/subscriptions/{invoice['subscription_id']}").json()
    assert subscription["status"] == "past_due"


def test_webhook_with_a_bad_signature_changes_nothing(client: BillingClient) -> None:
    invoice = first_invoice(client, "pm_sim_processing")
    client.post_new(f"/v1/invoices/{invoice['id']}/pay")
    [payment] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    payload, _ = signed_event(
        "whsec_someone_else",
        "evt_3",
        "payment_intent.succeeded",
        {"id": payment["gateway_reference"]},
    )
    _, forged = signed_event("whsec_someone_else", "evt_3", "payment_intent.succeeded", {})
    for signature in (forged, None):
        headers = {"Stripe-Signature": signature} if signature else {}
        response = client.post("/v1/webhooks/stripe", content=payload, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "webhook_signature_invalid"
    assert client.get(f"/v1/invoices/{invoice['id']}").json()["status"] == "open"
