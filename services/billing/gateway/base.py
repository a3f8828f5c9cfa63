"""What the billing rules need from a payment gateway, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from services.billing.errors import BillingError


class ChargeOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    # Accepted but not settled (bank debits, Stripe "processing"); a webhook settles it.
    PENDING = "pending"


@dataclass(frozen=True)
class ChargeRequest:
    amount: int
    currency: str
    payment_method: str
    customer_reference: str | None
    description: str
    invoice_id: str
    # Same key, same charge: a retry after a crash or a timeout cannot charge twice.
    idempotency_key: str
    # Our payment row, sent as metadata so a webhook finds it even before the reference is saved.
    payment_id: str = ""


@dataclass(frozen=True)
class ChargeResult:
    outcome: ChargeOutcome
    reference: str | None
    failure_code: str | None = None
    failure_message: str | None = None


class GatewayUnavailableError(Exception):
    """The gateway did not answer; the charge may or may not exist, so retry with the same key."""


class GatewayConfigurationError(Exception):
    """The gateway refused our credentials or permissions: nothing the customer did or can fix.

    No charge was made; collection retries later without counting an attempt, and the failures
    show in metrics and in the worker's health check until someone fixes the configuration.
    """


class GatewayIdempotencyConflictError(Exception):
    """The attempt's key was first sent with other parameters (the card changed after a crash).

    Whether that first request charged is unknown here, so the invoice waits for a person.
    """


class PaymentMethodRejectedError(BillingError):
    """The gateway refused the payment method itself (unknown token, wrong customer)."""

    def __init__(self, message: str) -> None:
        super().__init__("payment_method_rejected", message, status=422)


class PaymentGateway(Protocol):
    @property
    def name(self) -> str: ...

    def create_customer(
        self, *, email: str, name: str, payment_method: str | None, idempotency_key: str
    ) -> str:
        """Register the customer and their saved payment method; returns the gateway's id."""
        ...

    async def create_customer_async(
        self, *, email: str, name: str, payment_method: str | None, idempotency_key: str
    ) -> str:
        """create_customer from the event loop, which it never blocks."""
        ...

    def attach_payment_method(self, *, customer_reference: str, payment_method: str) -> None:
        """Make payment_method the customer's default for off-session charges."""
        ...

    def charge(self, request: ChargeRequest) -> ChargeResult:
        """Charge off-session; raises GatewayUnavailableError when the outcome is unknown."""
        ...

    def retrieve(self, reference: str) -> ChargeResult:
        """The current outcome of a charge the gateway accepted as pending.

        A charge that needs the customer present is canceled first, so it cannot succeed after
        it was recorded as failed.
        """
        ...

    def refund(self, *, reference: str, amount: int, idempotency_key: str) -> None:
        """Give back a charge in full; the key makes a repeated refund a no-op."""
        ...
