"""Stripe through its official SDK: PaymentIntents confirmed off-session with saved cards.

Every error the SDK raises maps to an outcome (https://docs.stripe.com/error-handling and
https://docs.stripe.com/api/errors): a card error or an invalid request is a decline of this
charge; authentication and permission errors are our configuration; connection, rate-limit
and API errors (and any error type this code does not know) leave the outcome unknown, so the
same idempotency key is sent again later.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import stripe

from services.billing.gateway.base import (
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
    GatewayConfigurationError,
    GatewayIdempotencyConflictError,
    GatewayUnavailableError,
    PaymentMethodRejectedError,
)

# Stripe's SDK waits 80 s per request by default and retries; a billing call must fail fast
# enough that a worker or a request thread is not held for minutes (issue: a slow gateway
# exhausted the API's pool). One retry with the same idempotency key keeps the worst case
# near 30 s, under the worker's claim lease.
TIMEOUT_SECONDS = 15.0
MAX_NETWORK_RETRIES = 1

_PENDING_STATUSES = {"processing"}
T = TypeVar("T")


class StripeGateway:
    def __init__(
        self, api_key: str, *, api_base: str | None = None, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.timeout = timeout
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            # The SDK retries network errors with the same idempotency key, which is safe.
            max_network_retries=MAX_NETWORK_RETRIES,
            http_client=stripe.new_default_http_client(timeout=timeout),
        )

    @property
    def name(self) -> str:
        return "stripe"

    def create_customer(
        self, *, email: str, name: str, payment_method: str | None, idempotency_key: str
    ) -> str:
        params: stripe.params.CustomerCreateParams = {"email": email, "name": name}
        if payment_method:
            params["payment_method"] = payment_method
            params["invoice_settings"] = {"default_payment_method": payment_method}
        customer = _customer_call(
            lambda: self._client.v1.customers.create(
                params, options={"idempotency_key": idempotency_key}
            )
        )
        return str(customer.id)

    async def create_customer_async(
        self, *, email: str, name: str, payment_method: str | None, idempotency_key: str
    ) -> str:
        # The SDK's client blocks on the network: a worker thread waits for it instead of the
        # event loop (anyio's default limiter, 40 threads).
        return await anyio.to_thread.run_sync(
            functools.partial(
                self.create_customer,
                email=email,
                name=name,
                payment_method=payment_method,
                idempotency_key=idempotency_key,
            )
        )

    def attach_payment_method(self, *, customer_reference: str, payment_method: str) -> None:
        def attach() -> None:
            self._client.v1.payment_methods.attach(payment_method, {"customer": customer_reference})
            self._client.v1.customers.update(
                customer_reference,
                {"invoice_settings": {"default_payment_method": payment_method}},
            )

        _customer_call(attach)

    def charge(self, request: ChargeRequest) -> ChargeResult:
        metadata = {"invoice_id": request.invoice_id}
        if request.payment_id:
            metadata["payment_id"] = request.payment_id
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "payment_method": request.payment_method,
            "confirm": True,
            "off_session": True,
            "description": request.description,
            "metadata": metadata,
        }
        if request.customer_reference:
            params["customer"] = request.customer_reference
        try:
            intent = _charge_call(
                lambda: self._client.v1.payment_intents.create(
                    params, options={"idempotency_key": request.idempotency_key}
                )
            )
        except stripe.CardError as error:
            details = error.error
            code = (details.decline_code if details else None) or error.code or "card_declined"
            reference = details.payment_intent.id if details and details.payment_intent else None
            return ChargeResult(ChargeOutcome.DECLINED, reference, code, error.user_message)
        except stripe.InvalidRequestError as error:
            if error.code == "idempotency_key_in_use":
                # The same attempt is still being processed (a retry raced its original): the
                # outcome is unknown, not a decline (https://docs.stripe.com/error-codes).
                raise GatewayUnavailableError(str(error)) from error
            # This charge cannot be made as asked (under the minimum, a detached payment
            # method, an amount the currency cannot take): a decline of the attempt, so dunning
            # goes on and a fixed payment method can succeed on the next retry.
            return ChargeResult(
                ChargeOutcome.DECLINED,
                None,
                error.code or "invalid_request",
                error.user_message or str(error),
            )
        return self._outcome(intent)

    def retrieve(self, reference: str) -> ChargeResult:
        intent = _charge_call(lambda: self._client.v1.payment_intents.retrieve(reference))
        return self._outcome(intent)

    def refund(self, *, reference: str, amount: int, idempotency_key: str) -> None:
        try:
            _charge_call(
                lambda: self._client.v1.refunds.create(
                    {"payment_intent": reference, "amount": amount},
                    options={"idempotency_key": idempotency_key},
                )
            )
        except stripe.InvalidRequestError as error:
            if error.code != "charge_already_refunded":
                raise GatewayUnavailableError(f"refund refused: {error}") from error

    def _outcome(self, intent: Any, *, cancel: bool = True) -> ChargeResult:  # noqa: PLR0911 - one return per PaymentIntent status
        status = str(intent.status)
        if status == "succeeded":
            return ChargeResult(ChargeOutcome.SUCCEEDED, intent.id)
        if status in _PENDING_STATUSES:
            return ChargeResult(ChargeOutcome.PENDING, intent.id)
        if status == "canceled":
            return ChargeResult(
                ChargeOutcome.DECLINED, intent.id, "canceled", "The payment was canceled."
            )
        if not cancel:
            return ChargeResult(
                ChargeOutcome.PENDING, intent.id, "unexpected_status", f"PaymentIntent {status}"
            )
        # requires_action and the like: an off-session charge that needs the customer. Cancel
        # it, so it cannot succeed after being recorded as failed and then be charged again by
        # dunning (https://docs.stripe.com/api/payment_intents/cancel: cancelable while in
        # requires_payment_method, requires_capture, requires_confirmation, requires_action
        # or processing).
        try:
            canceled = _charge_call(lambda: self._client.v1.payment_intents.cancel(intent.id))
        except stripe.InvalidRequestError:
            # It moved on meanwhile (it succeeded, say): report what it is now.
            current = _charge_call(lambda: self._client.v1.payment_intents.retrieve(intent.id))
            return self._outcome(current, cancel=False)
        if str(canceled.status) != "canceled":
            return self._outcome(canceled, cancel=False)
        return ChargeResult(
            ChargeOutcome.DECLINED,
            intent.id,
            "authentication_required",
            "The card needs the customer to authenticate the payment.",
        )


def _charge_call(call: Callable[[], T]) -> T:
    """Run a charge-side call; card and invalid-request errors are left to the caller."""
    try:
        return call()
    except stripe.IdempotencyError as error:
        raise GatewayIdempotencyConflictError(str(error)) from error
    except (stripe.CardError, stripe.InvalidRequestError):
        raise
    except (stripe.AuthenticationError, stripe.PermissionError) as error:
        raise GatewayConfigurationError(f"{type(error).__name__}: {error}") from error
    except stripe.StripeError as error:
        # APIConnectionError (including timeouts), RateLimitError, APIError, and any error type
        # added later: whether the charge happened is unknown; retry with the same key.
        raise GatewayUnavailableError(f"{type(error).__name__}: {error}") from error


def _customer_call(call: Callable[[], T]) -> T:
    try:
        return call()
    except (stripe.CardError, stripe.InvalidRequestError) as error:
        raise PaymentMethodRejectedError(error.user_message or str(error)) from error
    except (stripe.AuthenticationError, stripe.PermissionError) as error:
        raise GatewayConfigurationError(f"{type(error).__name__}: {error}") from error
    except stripe.StripeError as error:
        raise GatewayUnavailableError(f"{type(error).__name__}: {error}") from error
