"""Bad input on every endpoint: a 4xx with a stable code, and nothing written anywhere."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from services.billing.models import Base
from services.tests.conftest import BillingClient
from services.tests.factories import create_customer, create_plan, subscribe

RANDOM_ID = str(uuid.UUID(int=0x0123456789ABCDEF0123456789ABCDEF))
INVALID_JSON = b'{"email": "a@example.com", "name": '


@dataclass(frozen=True)
class BadRequest:
    method: str
    path: str
    body: Any
    status: int
    code: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.code}"


CASES = [
    # Customers
    BadRequest("POST", "/v1/customers", {}, 422, "validation_error"),
    BadRequest("POST", "/v1/customers", {"email": "nope", "name": "A"}, 422, "validation_error"),
    BadRequest("POST", "/v1/customers", {"email": "a@b.co", "name": ""}, 422, "validation_error"),
    BadRequest(
        "POST",
        "/v1/customers",
        {"email": "a@b.co", "name": "A", "vip": True},
        422,
        "validation_error",
    ),
    BadRequest(
        "POST",
        "/v1/customers",
        {"email": "a@b.co", "name": "A", "payment_method": "pm x!"},
        422,
        "validation_error",
    ),
    BadRequest("POST", "/v1/customers", INVALID_JSON, 400, "invalid_json"),
    # Control characters: PostgreSQL cannot store NUL (it was a 500), the rest forge or hide.
    BadRequest(
        "POST", "/v1/customers", {"email": "a@b.co", "name": "A\u0000da"}, 422, "validation_error"
    ),
    BadRequest(
        "POST", "/v1/customers", {"email": "a\u0000@b.co", "name": "A"}, 422, "validation_error"
    ),
    BadRequest(
        "PATCH", "/v1/customers/{customer}", {"name": "A\u001b[2J"}, 422, "validation_error"
    ),
    BadRequest(
        "POST",
        "/v1/plans",
        {"name": "P\u0085", "amount": 1, "currency": "USD", "interval": "month"},
        422,
        "validation_error",
    ),
    BadRequest("GET", "/v1/customers/not-a-uuid", None, 422, "validation_error"),
    BadRequest("GET", f"/v1/customers/{RANDOM_ID}", None, 404, "customer_not_found"),
    BadRequest("GET", "/v1/customers?limit=0", None, 422, "validation_error"),
    BadRequest("GET", "/v1/customers?limit=101", None, 422, "validation_error"),
    BadRequest("GET", "/v1/customers?cursor=page-2", None, 422, "validation_error"),
    BadRequest("PATCH", f"/v1/customers/{RANDOM_ID}", {"name": "B"}, 404, "customer_not_found"),
    BadRequest("PATCH", "/v1/customers/{customer}", {"email": 5}, 422, "validation_error"),
    # Plans: money is a whole number of minor units in an ISO currency.
    BadRequest(
        "POST",
        "/v1/plans",
        {"name": "P", "amount": 10.5, "currency": "USD", "interval": "month"},
        422,
        "validation_error",
    ),
    BadRequest(
        "POST",
        "/v1/plans",
        {"name": "P", "amount": "100", "currency": "USD", "interval": "month"},
        422,
        "validation_error",
    ),
    BadRequest(
        "POST",
        "/v1/plans",
        {"name": "P", "amount": -1, "currency": "USD", "interval": "month"},
        422,
        "validation_error",
    ),
    BadRequest(
        "POST",
        "/v1/plans",
        {"name": "P", "amount": 1, "currency": "usd", "interval": "month"},
        422,
        "validation_error",
    ),
    BadRequest(
        "POST",
        "/v1/plans",
        {"name": "P", "amount": 1, "currency": "XYZ", "interval": "month"},
        422,
        "validation_error",
    ),
    BadRequest(
        "POST",
        "/v1/plans",
        {"name": "P", "amount": 1, "currency": "USD", "interval": "fortnight"},
        422,
        "validation_error",
    ),
    BadRequest(
        "POST",
        "/v1/plans",
        {"name": "P", "amount": 1, "currency": "USD", "interval": "month", "trial_days": 1000},
        422,
        "validation_error",
    ),
    BadRequest("GET", f"/v1/plans/{RANDOM_ID}", None, 404, "plan_not_found"),
    # Subscriptions
    BadRequest("POST", "/v1/subscriptions", {"customer_id": "{customer}"}, 422, "validation_error"),
    BadRequest(
        "POST",
        "/v1/subscriptions",
        {"customer_id": RANDOM_ID, "plan_id": "{plan}"},
        422,
        "customer_not_found",
    ),
    BadRequest(
        "POST",
        "/v1/subscriptions",
        {"customer_id": "{customer}", "plan_id": RANDOM_ID},
        422,
        "plan_not_found",
    ),
    BadRequest(
        "POST",
        "/v1/subscriptions",
        {"customer_id": "{customer}", "plan_id": "{euro_plan}"},
        409,
        "currency_mismatch",
    ),
    BadRequest("GET", "/v1/subscriptions?status=sleeping", None, 422, "validation_error"),
    BadRequest("GET", f"/v1/subscriptions/{RANDOM_ID}", None, 404, "subscription_not_found"),
    BadRequest(
        "POST",
        f"/v1/subscriptions/{RANDOM_ID}/change-plan",
        {"plan_id": "{plan}"},
        404,
        "subscription_not_found",
    ),
    BadRequest(
        "POST",
        "/v1/subscriptions/{subscription}/change-plan",
        {"plan_id": "{plan}"},
        409,
        "plan_unchanged",
    ),
    BadRequest(
        "POST",
        "/v1/subscriptions/{subscription}/change-plan",
        {"plan_id": RANDOM_ID},
        422,
        "plan_not_found",
    ),
    BadRequest("POST", "/v1/subscriptions/{subscription}/change-plan", {}, 422, "validation_error"),
    BadRequest(
        "POST",
        "/v1/subscriptions/{subscription}/cancel",
        {"at_period_end": "yes"},
        422,
        "validation_error",
    ),
    BadRequest("POST", f"/v1/subscriptions/{RANDOM_ID}/cancel", {}, 404, "subscription_not_found"),
    BadRequest("POST", f"/v1/subscriptions/{RANDOM_ID}/pause", None, 404, "subscription_not_found"),
    BadRequest(
        "POST", "/v1/subscriptions/{subscription}/resume", None, 409, "subscription_not_paused"
    ),
    # Invoices and payments
    BadRequest("GET", "/v1/invoices?status=unpaid", None, 422, "validation_error"),
    BadRequest("GET", f"/v1/invoices/{RANDOM_ID}", None, 404, "invoice_not_found"),
    BadRequest("POST", f"/v1/invoices/{RANDOM_ID}/pay", None, 404, "invoice_not_found"),
    BadRequest("POST", f"/v1/invoices/{RANDOM_ID}/void", None, 404, "invoice_not_found"),
    BadRequest("POST", "/v1/invoices/not-a-uuid/pay", None, 422, "validation_error"),
    BadRequest("GET", f"/v1/payments/{RANDOM_ID}", None, 404, "payment_not_found"),
    BadRequest("GET", "/v1/payments?invoice_id=42", None, 422, "validation_error"),
    # Webhooks
    BadRequest("POST", "/v1/webhooks/stripe", b'{"id": "evt_x"}', 400, "webhook_signature_invalid"),
]


def ledger_snapshot(db: Session) -> dict[str, str]:
    """A digest of every row of every table."""
    db.rollback()
    return {
        table.name: str(
            db.scalar(
                text(
                    f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "  # noqa: S608 - table names from the models
                    f"FROM {table.name} t"
                )
            )
        )
        for table in Base.metadata.sorted_tables
    }


@pytest.fixture
def existing(client: BillingClient) -> dict[str, str]:
    customer = create_customer(client)
    plan = create_plan(client)
    euro_plan = create_plan(client, currency="EUR", name="Euro")
    subscription = subscribe(client, customer, plan)
    return {
        "customer": customer["id"],
        "plan": plan["id"],
        "euro_plan": euro_plan["id"],
        "subscription": subscription["id"],
    }


def fill(value: Any, existing: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**existing) if "{" in value else value
    if isinstance(value, dict):
        return {key: fill(item, existing) for key, item in value.items()}
    return value


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_refused_and_writes_nothing(
    case: BadRequest, client: BillingClient, existing: dict[str, str], db: Session
) -> None:
    before = ledger_snapshot(db)
    headers = {"Idempotency-Key": f"bad-{uuid.uuid4()}"}
    body = fill(case.body, existing)
    if isinstance(body, bytes):
        headers["Content-Type"] = "application/json"
        response = client.request(
            case.method, fill(case.path, existing), content=body, headers=headers
        )
    else:
        response = client.request(
            case.method, fill(case.path, existing), json=body, headers=headers
        )
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["code"] == case.code
    assert error["message"]
    assert ledger_snapshot(db) == before
