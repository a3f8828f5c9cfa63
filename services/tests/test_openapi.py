"""The OpenAPI document is the contract: a fuzzer finds nothing, and a client made from it works.

schemathesis (https://schemathesis.readthedocs.io) runs every check it has (`--checks all`)
through all four phases, the stateful one included, which follows the document's links from
each POST to the operations that take the id it returned. openapi-python-client generates a
client from the same document, and that client drives a customer through to a payment.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.tests.conftest import REPOSITORY_ROOT, bearer_token

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
# Enough examples per operation to meet each check many times, few enough for a test run.
MAX_EXAMPLES = 12


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def test_schemathesis_finds_no_failure(api_url: str, clean: None, tmp_path: Path) -> None:
    del clean
    command = [
        _tool("schemathesis"),
        "--config-file",
        str(TESTS / "schemathesis.toml"),
        "run",
        f"{api_url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "20261129",
        "--workers",
        "1",
        # Its input is an event signed with the endpoint's secret, which no fuzzer can forge;
        # test_api_invoices.py and test_payment_lifecycle.py send it signed events.
        "--exclude-operation-id",
        "stripe_webhook",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        command,
        # Its cache (.schemathesis/) goes to the test's directory, not the repository.
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": str(REPOSITORY_ROOT),
            "SCHEMATHESIS_HOOKS": "services.tests.schemathesis_hooks",
            # Read by schemathesis.toml's [auth.openapi.bearer].
            "BILLING_TEST_TOKEN": bearer_token(),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-30000:] + result.stderr[-5000:]
    # Every phase ran, the stateful one with scenarios built from the document's links.
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅\s+{phase}", result.stdout), phase
    assert re.search(r"Scenarios:\s+[1-9]", result.stdout)


@pytest.fixture
def generated_client(api_url: str, tmp_path: Path) -> Iterator[Any]:
    """The package openapi-python-client makes from the served document, importable."""
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(httpx.get(f"{api_url}/openapi.json").json()))
    config = tmp_path / "config.json"
    # No post hooks: the generator would otherwise run ruff over the generated code.
    config.write_text(json.dumps({"post_hooks": [], "package_name_override": "billing_client"}))
    subprocess.run(
        [
            _tool("openapi-python-client"),
            "generate",
            "--path",
            str(document),
            "--config",
            str(config),
            "--output-path",
            str(tmp_path / "billing_client"),
            "--meta",
            "none",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("billing_client")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [module for module in sys.modules if module.startswith("billing_client")]:
            del sys.modules[name]


def test_a_generated_client_takes_a_customer_to_a_payment(
    api_url: str, clean: None, generated_client: Any
) -> None:
    del clean
    models = importlib.import_module("billing_client.models")
    with generated_client.AuthenticatedClient(base_url=api_url, token=bearer_token()) as client:

        def key() -> str:
            return uuid.uuid4().hex

        customer = importlib.import_module(
            "billing_client.api.customers.create_customer"
        ).sync_detailed(
            client=client,
            body=models.CustomerCreate(
                email="ada@example.com", name="Ada", payment_method="pm_card_visa"
            ),
            idempotency_key=key(),
        )
        assert customer.status_code == 201, customer.content
        plan = importlib.import_module("billing_client.api.plans.create_plan").sync_detailed(
            client=client,
            body=models.PlanCreate(
                name="Pro",
                amount=2500,
                currency=models.PlanCreateCurrency.USD,
                interval=models.BillingInterval.MONTH,
            ),
            idempotency_key=key(),
        )
        assert plan.status_code == 201, plan.content
        subscription = importlib.import_module(
            "billing_client.api.subscriptions.create_subscription"
        ).sync_detailed(
            client=client,
            body=models.SubscriptionCreate(customer_id=customer.parsed.id, plan_id=plan.parsed.id),
            idempotency_key=key(),
        )
        assert subscription.status_code == 201, subscription.content
        assert subscription.parsed.status == models.SubscriptionStatus.ACTIVE
        invoices = importlib.import_module("billing_client.api.invoices.list_invoices").sync(
            client=client, subscription_id=subscription.parsed.id
        )
        [invoice] = invoices.data
        assert (invoice.amount_due, invoice.status) == (2500, models.InvoiceStatus.OPEN)
        paid = importlib.import_module("billing_client.api.invoices.pay_invoice").sync_detailed(
            invoice.id, client=client, idempotency_key=key()
        )
        assert paid.status_code == 200, paid.content
        assert paid.parsed.outcome == models.CollectionOutcome.PAID
        assert paid.parsed.invoice.status == models.InvoiceStatus.PAID
        payments = importlib.import_module("billing_client.api.payments.list_payments").sync(
            client=client, invoice_id=invoice.id
        )
        [payment] = payments.data
        assert (payment.amount, payment.status) == (2500, models.PaymentStatus.SUCCEEDED)
