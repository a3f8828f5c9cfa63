"""The Stripe gateway against a loopback stand-in for Stripe's API, in Stripe's wire format."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services.billing.gateway import (
    ChargeOutcome,
    ChargeRequest,
    GatewayConfigurationError,
    GatewayUnavailableError,
    PaymentMethodRejectedError,
    StripeGateway,
)
from services.billing.gateway.stripe_gateway import TIMEOUT_SECONDS
from services.billing.gateway.webhooks import WebhookSignatureError, verify_event
from services.tests.conftest import run_async
from services.tests.webhook_signing import signed_event


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeStripe:
    """Answers each request with the next scripted (status, body) and records what it got."""

    url: str = ""
    replies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    # Seconds to wait before answering, to stand for a gateway that hangs.
    delay: float = 0.0


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.do_POST()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            fake.requests.append(
                RecordedRequest(self.command, self.path, dict(self.headers.items()), form)
            )
            status, body = fake.replies.pop(0) if fake.replies else (500, {})
            time.sleep(fake.delay)
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                # The client timed out and hung up first, as the timeout test means it to.
                pass

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def charge_request(key: str = "billing-invoice-1-attempt-1") -> ChargeRequest:
    return ChargeRequest(
        amount=2500,
        currency="EUR",
        payment_method="pm_card_visa",
        customer_reference="cus_123",
        description="Invoice 1",
        invoice_id="inv-1",
        idempotency_key=key,
    )


def intent(status: str, identifier: str = "pi_123") -> dict[str, Any]:
    return {"id": identifier, "object": "payment_intent", "status": status}


def test_charge_confirms_off_session_and_passes_the_idempotency_key(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.replies.append((200, intent("succeeded")))
    gateway = StripeGateway("sk_test_fake", api_base=fake_stripe.url)
    result = gateway.charge(charge_request())
    assert (result.outcome, result.reference) == (ChargeOutcome.SUCCEEDED, "pi_123")
    [sent] = fake_stripe.requests
    assert sent.path == "/v1/payment_intents"
    assert sent.headers["Idempotency-Key"] == "billing-invoice-1-attempt-1"
    assert sent.headers["Authorization"] == "Bearer sk_test_fake"
    assert sent.form["amount"] == "2500"
    assert sent.form["currency"] == "eur"
    assert sent.form["customer"] == "cus_123"
    assert sent.form["payment_method"] == "pm_card_visa"
    assert sent.form["confirm"] == "true"
    assert sent.form["off_session"] == "true"
    assert sent.form["metadata[invoice_id]"] == "inv-1"


def test_card_errors_are_declines_with_stripes_code(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies.append(
        (
            402,
            {
                "error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "insufficient_funds",
                    "message": "Your card has insufficient funds.",
                    "payment_intent": intent("requires_payment_method", "pi_456"),
                }
            },
        )
    )
    result = StripeGateway("sk_test_fake", api_base=fake_stripe.url).charge(charge_request())
    assert result.outcome is ChargeOutcome.DECLINED
    assert result.failure_code == "insufficient_funds"
    assert result.reference == "pi_456"


def test_a_processing_intent_is_pending(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies.append((200, intent("processing")))
    result = StripeGateway("sk_test_fake", api_base=fake_stripe.url).charge(charge_request())
    assert result.outcome is ChargeOutcome.PENDING


def test_an_intent_that_needs_the_customer_is_canceled_then_declined(
    fake_stripe: FakeStripe,
) -> None:
    # Recorded as failed, it must not be able to succeed later and be charged again by dunning.
    fake_stripe.replies += [(200, intent("requires_action")), (200, intent("canceled"))]
    result = StripeGateway("sk_test_fake", api_base=fake_stripe.url).charge(charge_request())
    assert (result.outcome, result.failure_code) == (
        ChargeOutcome.DECLINED,
        "authentication_required",
    )
    assert [request.path for request in fake_stripe.requests] == [
        "/v1/payment_intents",
        "/v1/payment_intents/pi_123/cancel",
    ]


def test_an_intent_that_succeeded_before_the_cancel_counts_as_paid(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.replies += [
        (200, intent("requires_action")),
        (
            400,
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "payment_intent_unexpected_state",
                    "message": "This PaymentIntent's status is succeeded.",
                }
            },
        ),
    ]
    gateway = StripeGateway("sk_test_fake", api_base=fake_stripe.url)
    # The retrieve after the refused cancel is a GET; the stand-in answers GETs from the list.
    fake_stripe.replies.append((200, intent("succeeded")))
    assert gateway.charge(charge_request()).outcome is ChargeOutcome.SUCCEEDED


def test_server_errors_mean_unknown_outcome_and_retries_keep_the_key(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.replies.extend([(500, {"error": {"type": "api_error", "message": "down"}})] * 3)
    with pytest.raises(GatewayUnavailableError):
        StripeGateway("sk_test_fake", api_base=fake_stripe.url).charge(charge_request("key-9"))
    assert {request.headers["Idempotency-Key"] for request in fake_stripe.requests} == {"key-9"}


def test_customer_creation_saves_the_default_payment_method(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies.append((200, {"id": "cus_789", "object": "customer"}))
    gateway = StripeGateway("sk_test_fake", api_base=fake_stripe.url)
    reference = gateway.create_customer(
        email="ada@example.com", name="Ada", payment_method="pm_card_visa", idempotency_key="c-1"
    )
    assert reference == "cus_789"
    [sent] = fake_stripe.requests
    assert sent.path == "/v1/customers"
    assert sent.headers["Idempotency-Key"] == "c-1"
    assert sent.form["invoice_settings[default_payment_method]"] == "pm_card_visa"


def test_customer_creation_from_the_event_loop_waits_in_a_thread(
    fake_stripe: FakeStripe,
) -> None:
    # A stand-in that answers only after a while: the event loop must keep running meanwhile.
    fake_stripe.delay = 0.3
    fake_stripe.replies.append((200, {"id": "cus_async", "object": "customer"}))
    gateway = StripeGateway("sk_test_fake", api_base=fake_stripe.url)

    async def create() -> tuple[str, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        reference = await gateway.create_customer_async(
            email="ada@example.com", name="Ada", payment_method=None, idempotency_key="c-async"
        )
        ticker.cancel()
        return reference, ticks

    reference, ticks = run_async(create())
    assert reference == "cus_async"
    assert ticks > 0  # the loop ran while the call waited (a blocking call leaves it at 0)
    [sent] = fake_stripe.requests
    assert sent.headers["Idempotency-Key"] == "c-async"


def test_a_rejected_payment_method_is_a_client_error(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies.append(
        (400, {"error": {"type": "invalid_request_error", "message": "No such PaymentMethod"}})
    )
    gateway = StripeGateway("sk_test_fake", api_base=fake_stripe.url)
    with pytest.raises(PaymentMethodRejectedError) as raised:
        gateway.create_customer(
            email="a@example.com", name="A", payment_method="pm_nope", idempotency_key="c-2"
        )
    assert raised.value.status == 422


def test_webhook_verification_accepts_only_our_signature() -> None:
    secret = "whsec_test_fake"
    payload, signature = signed_event(secret, "evt_1", "payment_intent.succeeded", {"id": "pi_123"})
    event = verify_event(payload, signature, secret)
    assert (event.id, event.type, event.payment_reference) == (
        "evt_1",
        "payment_intent.succeeded",
        "pi_123",
    )
    with pytest.raises(WebhookSignatureError):
        verify_event(payload, signature, "whsec_other")
    with pytest.raises(WebhookSignatureError):
        verify_event(payload + b" ", signature, secret)
    stale = signature.replace("t=", "t=1", 1)
    with pytest.raises(WebhookSignatureError):
        verify_event(payload, stale, secret)


def stripe_error(kind: str, code: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": message}}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("amount_too_small", "Amount must be at least $0.50 usd"),
        ("payment_method_not_available", "The PaymentMethod was detached from this customer."),
        ("invalid_currency_amount", "Amounts in kwd must be a multiple of 10."),
    ],
)
def test_an_invalid_request_is_a_decline_of_that_charge(
    fake_stripe: FakeStripe, code: str, message: str
) -> None:
    # https://docs.stripe.com/api/errors: invalid_request_error, HTTP 400.
    fake_stripe.replies.append((400, stripe_error("invalid_request_error", code, message)))
    result = StripeGateway("sk_test_fake", api_base=fake_stripe.url).charge(charge_request())
    assert (result.outcome, result.failure_code) == (ChargeOutcome.DECLINED, code)


def test_a_key_still_in_use_is_not_a_decline(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies.append(
        (409, stripe_error("invalid_request_error", "idempotency_key_in_use", "In use"))
    )
    with pytest.raises(GatewayUnavailableError):
        StripeGateway("sk_test_fake", api_base=fake_stripe.url).charge(charge_request())


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_configuration_error(
    fake_stripe: FakeStripe, status: int
) -> None:
    # 401 is AuthenticationError, 403 PermissionError in the SDK.
    fake_stripe.replies.append((status, stripe_error("invalid_request_error", "", "No access")))
    with pytest.raises(GatewayConfigurationError):
        StripeGateway("sk_test_fake", api_base=fake_stripe.url).charge(charge_request())


def test_rate_limits_leave_the_outcome_unknown(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies += [(429, stripe_error("rate_limit_error", "rate_limit", "Slow down"))] * 2
    with pytest.raises(GatewayUnavailableError):
        StripeGateway("sk_test_fake", api_base=fake_stripe.url).charge(charge_request())


def test_a_gateway_that_hangs_times_out_as_unavailable(fake_stripe: FakeStripe) -> None:
    assert 10 <= TIMEOUT_SECONDS <= 20
    fake_stripe.replies += [(200, intent("succeeded"))] * 2
    fake_stripe.delay = 3.0
    gateway = StripeGateway("sk_test_fake", api_base=fake_stripe.url, timeout=0.5)
    with pytest.raises(GatewayUnavailableError, match="APIConnectionError"):
        gateway.charge(charge_request())
    # The retry went out with the same key.
    assert {request.headers["Idempotency-Key"] for request in fake_stripe.requests} == {
        "billing-invoice-1-attempt-1"
    }


def test_a_refund_passes_its_key_and_tolerates_one_already_made(fake_stripe: FakeStripe) -> None:
    fake_stripe.replies += [
        (200, {"id": "re_1", "object": "refund", "status": "succeeded"}),
        (400, stripe_error("invalid_request_error", "charge_already_refunded", "Refunded")),
    ]
    gateway = StripeGateway("sk_test_fake", api_base=fake_stripe.url)
    for _ in range(2):
        gateway.refund(reference="pi_123", amount=2500, idempotency_key="billing-refund-p1")
    first = fake_stripe.requests[0]
    assert (first.path, first.form["payment_intent"], first.form["amount"]) == (
        "/v1/refunds",
        "pi_123",
        "2500",
    )
    assert first.headers["Idempotency-Key"] == "billing-refund-p1"
