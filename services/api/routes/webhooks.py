"""Gateway webhooks: signature-checked, deduplicated by event id, then applied.

No bearer token and no Idempotency-Key here: the gateway signs its requests and redelivers
the same event id, which serves as the idempotency key.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from sqlalchemy.dialects.postgresql import insert

from services.api import schemas
from services.api.dependencies import CurrentRuntime, SystemSession
from services.api.routes import error_responses
from services.billing.collection import apply_gateway_event
from services.billing.errors import BillingError
from services.billing.gateway.webhooks import (
    PAYMENT_EVENTS,
    PAYMENT_SUCCEEDED,
    WebhookSignatureError,
    verify_event,
)
from services.billing.models import WebhookEvent

router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], responses=error_responses(400, 413, 503)
)


SIGNATURE_HEADER = "Stripe-Signature"
# Stripe's events are a few KiB; its documentation does not give a maximum, and a single event
# object stays far below this.
MAX_WEBHOOK_BYTES = 64 * 1024


class PayloadTooLargeError(BillingError):
    def __init__(self) -> None:
        super().__init__(
            "payload_too_large",
            f"Webhook bodies are limited to {MAX_WEBHOOK_BYTES} bytes",
            status=413,
        )


async def raw_body(request: Request) -> bytes:
    """The exact bytes sent (the signature covers them), read no further than the limit.

    Anyone may call this endpoint before its signature is checked, so the body is never held
    whole beyond MAX_WEBHOOK_BYTES: a declared length over it is refused unread, and a streamed
    body is cut off as soon as it passes it.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            raise PayloadTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/stripe")
def stripe_webhook(
    payload: Annotated[bytes, Depends(raw_body)],
    session: SystemSession,
    runtime: CurrentRuntime,
    # Optional here so that a missing header is answered like a wrong one (400); the
    # document marks it required (services/api/openapi.py).
    stripe_signature: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            description=(
                "Stripe's signature of the exact body: `t=<unix time>,v1=<hex HMAC-SHA256 of "
                "'<t>.<body>' with the endpoint's signing secret>`; events older than the "
                "tolerance are refused (https://stripe.com/docs/webhooks/signatures#verify-manually)."
            ),
        ),
    ] = None,
) -> schemas.WebhookReceipt:
    if not runtime.webhook_secret:
        raise BillingError("webhook_not_configured", "STRIPE_WEBHOOK_SECRET is not set", status=503)
    try:
        event = verify_event(payload, stripe_signature, runtime.webhook_secret)
    except WebhookSignatureError as error:
        raise BillingError("webhook_signature_invalid", str(error)) from error
    first_delivery = session.scalar(
        insert(WebhookEvent)
        .values(id=event.id, type=event.type)
        .on_conflict_do_nothing(index_elements=[WebhookEvent.id])
        .returning(WebhookEvent.id)
    )
    if first_delivery is None:
        return schemas.WebhookReceipt(received=True, duplicate=True)
    if event.type in PAYMENT_EVENTS:
        applied = apply_gateway_event(
            session,
            payment_reference=event.payment_reference,
            payment_id=event.payment_id,
            succeeded=event.type == PAYMENT_SUCCEEDED,
            failure_code=event.failure_code,
            failure_message=event.failure_message,
            now=runtime.clock(),
        )
        if applied is None:
            # Not recorded as handled: the gateway retries a 5xx for days
            # (https://docs.stripe.com/webhooks#retries), by when the payment it is about
            # has been committed, or someone looks.
            session.rollback()
            raise BillingError(
                "webhook_event_unmatched",
                f"No payment matches {event.type} for {event.payment_reference}",
                status=503,
            )
    session.commit()
    return schemas.WebhookReceipt(received=True, duplicate=False)
