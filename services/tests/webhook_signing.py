"""Stripe-style webhook signatures, computed the way Stripe documents them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any


def signed_event(
    secret: str, event_id: str, event_type: str, intent: dict[str, Any]
) -> tuple[bytes, str]:
    """The payload and its Stripe-Signature header: t=<unix>,v1=HMAC-SHA256("<t>.<payload>")."""
    payload = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "data": {"object": {"object": "payment_intent", **intent}},
        }
    ).encode()
    timestamp = int(time.time())
    digest = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256
    ).hexdigest()
    return payload, f"t={timestamp},v1={digest}"
