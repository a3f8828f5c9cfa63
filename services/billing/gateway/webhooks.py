"""Stripe webhook events, verified by signature before anything reads them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import stripe

# The payment events that settle a charge the gateway accepted as pending.
PAYMENT_SUCCEEDED = "payment_intent.succeeded"
PAYMENT_FAILED = "payment_intent.payment_failed"
# A canceled PaymentIntent can no longer succeed: a failure of that attempt.
PAYMENT_CANCELED = "payment_intent.canceled"
PAYMENT_EVENTS = frozenset({PAYMENT_SUCCEEDED, PAYMENT_FAILED, PAYMENT_CANCELED})


class WebhookSignatureError(ValueError):
    """The payload is not signed with our webhook secret (or is stale or malformed)."""


@dataclass(frozen=True)
class GatewayEvent:
    id: str
    type: str
    # The PaymentIntent the event is about, for payment events.
    payment_reference: str | None
    failure_code: str | None
    failure_message: str | None
    # Our payment's id, from the PaymentIntent's metadata.
    payment_id: str | None = None


def verify_event(payload: bytes, signature: str | None, secret: str) -> GatewayEvent:
    """Check the Stripe-Signature header (HMAC-SHA256, 5-minute tolerance) and parse the event."""
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance=300)
        event = json.loads(payload)
        event_id, event_type = str(event["id"]), str(event["type"])
        subject = event["data"]["object"]
    except stripe.SignatureVerificationError as error:
        raise WebhookSignatureError(str(error)) from error
    except (ValueError, KeyError, TypeError) as error:
        raise WebhookSignatureError(f"payload is not a Stripe event: {error!r}") from error
    if event_type not in PAYMENT_EVENTS or not isinstance(subject, dict):
        return GatewayEvent(event_id, event_type, None, None, None)
    last_error = subject.get("last_payment_error") or {}
    metadata = subject.get("metadata") or {}
    code = last_error.get("decline_code") or last_error.get("code")
    if event_type == PAYMENT_CANCELED:
        code = code or "canceled"
    return GatewayEvent(
        event_id,
        event_type,
        subject.get("id"),
        code,
        last_error.get("message"),
        payment_id=metadata.get("payment_id") if isinstance(metadata, dict) else None,
    )
