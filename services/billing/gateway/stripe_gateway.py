"""Stripe through its official SDK: PaymentIntents confirmed off-session with saved cards."""

from __future__ import annotations

import stripe

from services.billing.gateway.base import (
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
    GatewayIdempotencyConflictError,
    GatewayUnavailableError,
    PaymentMethodRejectedError,
)

_PENDING_STATUSES = {"processing"}
# A saved card that needs the customer present cannot be charged by a background job.
_NEEDS_CUSTOMER_STATUSES = {"requires_action", "requires_payment_method", "requires_confirmation"}


class StripeGateway:
    def __init__(self, api_key: str, *, api_base: str | None = None) -> None:
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            # The SDK retries network errors with the same idempotency key, which is safe.
            max_network_retries=2,
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
        try:
            customer = self._client.v1.customers.create(
                params, options={"idempotency_key": idempotency_key}
            )
        except (stripe.CardError, stripe.InvalidRequestError) as error:
            raise PaymentMethodRejectedError(error.user_message or str(error)) from error
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as error:
            raise GatewayUnavailableError(str(error)) from error
        return customer.id

    def attach_payment_method(self, *, customer_reference: str, payment_method: str) -> None:
        try:
            self._client.v1.payment_methods.attach(payment_method, {"customer": customer_reference})
            self._client.v1.customers.update(
                customer_reference,
                {"invoice_settings": {"default_payment_method": payment_method}},
            )
        except (stripe.CardError, stripe.InvalidRequestError) as error:
            raise PaymentMethodRejectedError(error.user_message or str(error)) from error
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as error:
            raise GatewayUnavailableError(str(error)) from error

    def charge(self, request: ChargeRequest) -> ChargeResult:
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "payment_method": request.payment_method,
            "confirm": True,
            "off_session": True,
            "description": request.description,
            "metadata": {"invoice_id": request.invoice_id},
        }
        if request.customer_reference:
            params["customer"] = request.customer_reference
        try:
            intent = self._client.v1.payment_intents.create(
                params, options={"idempotency_key": request.idempotency_key}
            )
        except stripe.IdempotencyError as error:
            raise GatewayIdempotencyConflictError(str(error)) from error
        except stripe.CardError as error:
            details = error.error
            code = (details.decline_code if details else None) or error.code or "card_declined"
            reference = details.payment_intent.id if details and details.payment_intent else None
            return ChargeResult(ChargeOutcome.DECLINED, reference, code, error.user_message)
        except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as error:
            raise GatewayUnavailableError(str(error)) from error
        if intent.status == "succeeded":
            return ChargeResult(ChargeOutcome.SUCCEEDED, intent.id)
        if intent.status in _NEEDS_CUSTOMER_STATUSES:
            return ChargeResult(
                ChargeOutcome.DECLINED,
                intent.id,
                "authentication_required",
                "The card needs the customer to authenticate the payment.",
            )
        if intent.status in _PENDING_STATUSES:
            return ChargeResult(ChargeOutcome.PENDING, intent.id)
        return ChargeResult(
            ChargeOutcome.DECLINED, intent.id, "unexpected_status", f"PaymentIntent {intent.status}"
        )
