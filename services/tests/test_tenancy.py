"""Tenants: a token reaches its own tenant's rows only, with the scopes it carries.

Three walls, each tested on its own: the API's scoped queries (another tenant's id is a 404),
the composite foreign keys (a row cannot point into another tenant), and PostgreSQL's
row-level security (a connection sees only the tenant it declared).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import psycopg
import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.billing.ids import new_id
from services.billing.models import Subscription, SubscriptionStatus
from services.tests.conftest import JWT_SECRET, BillingClient, Servers, bearer_token
from services.tests.factories import create_customer, create_plan, subscribe


@pytest.fixture
def other_tenant(client: BillingClient) -> Iterator[BillingClient]:
    """A client for merchant-2, beside `client` (merchant-1) on the same API."""
    with BillingClient(
        base_url=client.base_url,
        headers={"Authorization": f"Bearer {bearer_token('merchant-2')}"},
        timeout=30,
    ) as http:
        yield http


def paid_subscription(client: BillingClient) -> dict[str, Any]:
    customer = create_customer(client)
    plan = create_plan(client)
    subscription = subscribe(client, customer, plan)
    [invoice] = client.get("/v1/invoices", params={"subscription_id": subscription["id"]}).json()[
        "data"
    ]
    assert client.post_new(f"/v1/invoices/{invoice['id']}/pay").status_code == 200
    [payment] = client.get("/v1/payments", params={"invoice_id": invoice["id"]}).json()["data"]
    return {
        "customer": customer,
        "plan": plan,
        "subscription": subscription,
        "invoice": invoice,
        "payment": payment,
    }


def test_another_tenants_rows_are_not_found_and_not_listed(
    client: BillingClient, other_tenant: BillingClient
) -> None:
    mine = paid_subscription(client)
    for path in ("customers", "plans", "subscriptions", "invoices", "payments"):
        listed = other_tenant.get(f"/v1/{path}")
        assert listed.status_code == 200
        assert listed.json()["data"] == [], path
        assert len(client.get(f"/v1/{path}").json()["data"]) == 1, path
    for path, row in (
        ("customers", mine["customer"]),
        ("plans", mine["plan"]),
        ("subscriptions", mine["subscription"]),
        ("invoices", mine["invoice"]),
        ("payments", mine["payment"]),
    ):
        response = other_tenant.get(f"/v1/{path}/{row['id']}")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"].endswith("_not_found")
    # Filters naming another tenant's ids find nothing either.
    by_customer = other_tenant.get("/v1/payments", params={"customer_id": mine["customer"]["id"]})
    assert by_customer.json()["data"] == []


def test_another_tenants_rows_cannot_be_changed(
    client: BillingClient, other_tenant: BillingClient
) -> None:
    mine = paid_subscription(client)
    customer_id, subscription_id = mine["customer"]["id"], mine["subscription"]["id"]
    patched = other_tenant.patch(f"/v1/customers/{customer_id}", json={"name": "Mallory"})
    assert patched.status_code == 404
    for action, body in (("cancel", {"at_period_end": False}), ("pause", None)):
        response = other_tenant.post_new(f"/v1/subscriptions/{subscription_id}/{action}", body)
        assert response.status_code == 404, action
    other_plan = create_plan(other_tenant, amount=9000)
    changed = other_tenant.post_new(
        f"/v1/subscriptions/{subscription_id}/change-plan", {"plan_id": other_plan["id"]}
    )
    assert changed.status_code == 404
    assert changed.json()["error"]["code"] == "subscription_not_found"
    for action in ("pay", "void"):
        response = other_tenant.post_new(f"/v1/invoices/{mine['invoice']['id']}/{action}")
        assert response.status_code == 404, action
    assert client.get(f"/v1/customers/{customer_id}").json()["name"] == "Ada"
    assert client.get(f"/v1/subscriptions/{subscription_id}").json()["status"] == "active"


def test_a_subscription_cannot_use_another_tenants_customer_or_plan(
    client: BillingClient, other_tenant: BillingClient
) -> None:
    customer, plan = create_customer(client), create_plan(client)
    their_customer, their_plan = create_customer(other_tenant), create_plan(other_tenant)
    for body in (
        {"customer_id": customer["id"], "plan_id": their_plan["id"]},
        {"customer_id": their_customer["id"], "plan_id": plan["id"]},
    ):
        response = other_tenant.post_new("/v1/subscriptions", body)
        # An id in the body that names nothing of the caller's is a 422, like any unknown id.
        assert response.status_code == 422, body
        assert response.json()["error"]["code"].endswith("_not_found")
    assert other_tenant.get("/v1/subscriptions").json()["data"] == []


PLAN = {"name": "P", "amount": 1, "currency": "USD", "interval": "month"}


def test_scopes_limit_what_a_token_may_do(client: BillingClient) -> None:
    customer = create_customer(client)
    for scopes, method, path, body, allowed in (
        ("read", "GET", "/v1/customers", None, True),
        ("read", "POST", "/v1/customers", {"email": "a@example.com", "name": "A"}, False),
        ("write", "POST", "/v1/customers", {"email": "b@example.com", "name": "B"}, True),
        ("read", "PATCH", f"/v1/customers/{customer['id']}", {"name": "Ada L."}, False),
        ("write", "PATCH", f"/v1/customers/{customer['id']}", {"name": "Ada L."}, True),
        ("write", "POST", "/v1/plans", PLAN, False),
    ):
        response = client.request(
            method,
            path,
            json=body,
            headers={
                "Authorization": f"Bearer {bearer_token(scopes=scopes)}",
                "Idempotency-Key": new_id().hex,
            },
        )
        if allowed:
            assert response.status_code < 400, (scopes, method, path, response.text)
        else:
            assert response.status_code == 403, (scopes, method, path, response.text)
            assert response.json()["error"]["code"] == "insufficient_scope"


def test_voiding_an_invoice_needs_the_admin_scope(client: BillingClient) -> None:
    subscription = subscribe(client, create_customer(client), create_plan(client))
    [invoice] = client.get("/v1/invoices", params={"subscription_id": subscription["id"]}).json()[
        "data"
    ]
    writer = {"Authorization": f"Bearer {bearer_token(scopes='write')}", "Idempotency-Key": "v1"}
    refused = client.post(f"/v1/invoices/{invoice['id']}/void", headers=writer)
    assert refused.status_code == 403
    assert client.post_new(f"/v1/invoices/{invoice['id']}/void").status_code == 200


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"iss": None}, "no issuer"),
        ({"aud": None}, "no audience"),
        ({"iat": None}, "no issue time"),
        ({"tenant": None}, "no tenant"),
        ({"scope": None}, "no scope"),
        ({"aud": "someone-else"}, "another audience"),
        ({"iss": "someone-else"}, "another issuer"),
        ({"exp_after_iat": 25 * 3600}, "lives longer than 24 hours"),
        ({"scope": "read superuser"}, "an unknown scope"),
        ({"tenant": "../etc"}, "a malformed tenant"),
    ],
)
def test_tokens_must_carry_issuer_audience_tenant_scope_and_a_short_life(
    client: BillingClient, change: dict[str, Any], why: str
) -> None:
    claims: dict[str, Any] = {
        "iss": "billing",
        "aud": "billing-api",
        "sub": "tester",
        "tenant": "merchant-1",
        "scope": "read",
        "iat": int(time.time()),
    }
    lifetime = change.pop("exp_after_iat", 3600)
    claims["exp"] = claims["iat"] + lifetime
    for name, value in change.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    response = client.get("/v1/customers", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, why
    assert response.json()["error"]["code"] == "token_invalid"


def test_the_database_refuses_a_reference_into_another_tenant(
    client: BillingClient, db: Session
) -> None:
    customer, plan = create_customer(client), create_plan(client)
    period_start = db.get_one(Subscription, subscribe(client, customer, plan)["id"]).created_at
    db.add(
        Subscription(
            id=new_id(),
            tenant_id="merchant-2",
            customer_id=customer["id"],
            plan_id=plan["id"],
            status=SubscriptionStatus.ACTIVE,
            billing_anchor=period_start,
            current_period_start=period_start,
            current_period_end=period_start.replace(year=period_start.year + 1),
        )
    )
    with pytest.raises(IntegrityError, match="fk_subscriptions_tenant_id_customers"):
        db.commit()


def test_row_level_security_shows_a_connection_only_its_tenant(
    client: BillingClient, other_tenant: BillingClient, servers: Servers
) -> None:
    create_customer(client, name="Ada")
    create_customer(other_tenant, name="Grace")
    # Connected as the services' own role (the tables' owner), with no WHERE clause at all.
    with psycopg.connect(servers.postgres.conninfo()) as connection:
        assert connection.execute("SELECT count(*) FROM customers").fetchone() == (0,)
        connection.execute("SELECT set_config('billing.tenant_id', 'merchant-2', true)")
        assert connection.execute("SELECT name FROM customers").fetchall() == [("Grace",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            connection.execute(
                "INSERT INTO customers (id, tenant_id, email, name) "
                "VALUES (gen_random_uuid(), 'merchant-1', 'x@example.com', 'X')"
            )
        connection.rollback()
        connection.execute("SELECT set_config('billing.all_tenants', 'on', true)")
        assert connection.execute("SELECT count(*) FROM customers").fetchone() == (2,)
