"""A local payment gateway for development and tests, with Stripe-like idempotency.

The payment method token decides the outcome, named after Stripe's test cards where one exists.
Results and the ledger of successful charges live in Redis, so every API and worker process
shares them: a replayed idempotency key returns the stored result and never charges again.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any, cast

from services.billing.currencies import currency
from services.billing.gateway.base import (
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
    GatewayConfigurationError,
    GatewayIdempotencyConflictError,
    GatewayUnavailableError,
)

if TYPE_CHECKING:
    import redis

CARD_SUCCEEDS = "pm_card_visa"
CARD_DECLINED = "pm_card_chargeDeclined"
CARD_INSUFFICIENT_FUNDS = "pm_card_chargeDeclinedInsufficientFunds"
GATEWAY_UNAVAILABLE = "pm_sim_unavailable"
SETTLES_LATER = "pm_sim_processing"
# Off-session charge that needs the customer (Stripe: requires_action); canceled, so declined.
NEEDS_AUTHENTICATION = "pm_card_authenticationRequired"
# Our credentials are refused (Stripe: AuthenticationError).
GATEWAY_MISCONFIGURED = "pm_sim_misconfigured"
# An error of a kind the billing code does not know, to exercise the worker's last resort.
UNEXPECTED_ERROR = "pm_sim_unexpected_error"
# Succeeds after SLOW_CHARGE_SECONDS, to watch requests and jobs in flight.
SLOW_CARD = "pm_sim_slow"
SLOW_CHARGE_SECONDS = 1.5
# Succeeds after REAL_GATEWAY_SECONDS, about what a real gateway takes: the charging benchmark.
REAL_GATEWAY_CARD = "pm_sim_300ms"
REAL_GATEWAY_SECONDS = 0.3

_DECLINES = {
    CARD_DECLINED: ("card_declined", "Your card was declined."),
    CARD_INSUFFICIENT_FUNDS: ("insufficient_funds", "Your card has insufficient funds."),
}
_PREFIX = "billing:simulator"
# Stripe keeps idempotency results for 24 hours; so does the simulator.
_RESULT_TTL_SECONDS = 24 * 3600

# Store the result unless one exists, and book the charge in the same step: a process killed
# between the two would otherwise leave a charge that the ledger does not show.
_STORE_RESULT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], KEYS[1], ARGV[3]) end
  return ARGV[1]
end
return redis.call('GET', KEYS[1])
"""


class SimulatorGateway:
    def __init__(self, cache: redis.Redis) -> None:
        self._cache = cache
        self._store_result = cache.register_script(_STORE_RESULT)

    @property
    def name(self) -> str:
        return "simulator"

    def create_customer(
        self, *, email: str, name: str, payment_method: str | None, idempotency_key: str
    ) -> str:
        del email, name, payment_method  # The simulator keeps no customer records.
        return "cus_sim_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]

    async def create_customer_async(
        self, *, email: str, name: str, payment_method: str | None, idempotency_key: str
    ) -> str:
        # A hash, no I/O: it runs on the event loop itself.
        return self.create_customer(
            email=email, name=name, payment_method=payment_method, idempotency_key=idempotency_key
        )

    def attach_payment_method(self, *, customer_reference: str, payment_method: str) -> None:
        del customer_reference, payment_method  # The token alone decides the outcome here.

    def charge(self, request: ChargeRequest) -> ChargeResult:
        result_key = f"{_PREFIX}:result:{request.idempotency_key}"
        fingerprint = _fingerprint(request)
        stored = self._cache.get(result_key)
        if stored is None:
            if request.payment_method == GATEWAY_UNAVAILABLE:
                raise GatewayUnavailableError("simulated gateway outage")
            if request.payment_method == GATEWAY_MISCONFIGURED:
                raise GatewayConfigurationError("simulated AuthenticationError: invalid API key")
            if request.payment_method == UNEXPECTED_ERROR:
                raise _SimulatedBugError("simulated error the billing code does not know")
            if request.payment_method == SLOW_CARD:
                self._cache.incr(f"{_PREFIX}:in_flight")
                try:
                    time.sleep(SLOW_CHARGE_SECONDS)
                finally:
                    self._cache.decr(f"{_PREFIX}:in_flight")
            if request.payment_method == REAL_GATEWAY_CARD:
                time.sleep(REAL_GATEWAY_SECONDS)
            outcome = _decide(request)
            record = {"fingerprint": fingerprint, **_result_fields(outcome)}
            booking = ""
            if outcome.outcome is not ChargeOutcome.DECLINED:
                booking = json.dumps(
                    {
                        "invoice_id": request.invoice_id,
                        "amount": request.amount,
                        "currency": request.currency,
                        "reference": outcome.reference,
                    }
                )
            stored = self._store_result(
                keys=[result_key, f"{_PREFIX}:charges"],
                args=[json.dumps(record), _RESULT_TTL_SECONDS, booking],
            )
            if outcome.reference is not None:
                self._cache.setnx(f"{_PREFIX}:intent:{outcome.reference}", outcome.outcome.value)
        saved = json.loads(cast("bytes", stored))
        if saved["fingerprint"] != fingerprint:
            # Stripe answers such a request with an idempotency_error, likewise.
            raise GatewayIdempotencyConflictError(
                f"idempotency key {request.idempotency_key!r} was used for a different charge"
            )
        return ChargeResult(
            outcome=ChargeOutcome(saved["outcome"]),
            reference=saved["reference"],
            failure_code=saved["failure_code"],
            failure_message=saved["failure_message"],
        )

    def retrieve(self, reference: str) -> ChargeResult:
        status = cast("bytes | None", self._cache.get(f"{_PREFIX}:intent:{reference}"))
        if status is None:
            raise GatewayUnavailableError(f"no such payment {reference!r}")
        outcome = ChargeOutcome(status.decode())
        if outcome is ChargeOutcome.DECLINED:
            return ChargeResult(outcome, reference, "declined", "The payment failed.")
        return ChargeResult(outcome, reference)

    def refund(self, *, reference: str, amount: int, idempotency_key: str) -> None:
        record = json.dumps({"reference": reference, "amount": amount})
        self._cache.hsetnx(f"{_PREFIX}:refunds", idempotency_key, record)

    def finish_processing(self, reference: str, *, succeeded: bool) -> None:
        """The bank's answer for a pending charge, as a later webhook would report it."""
        outcome = ChargeOutcome.SUCCEEDED if succeeded else ChargeOutcome.DECLINED
        self._cache.set(f"{_PREFIX}:intent:{reference}", outcome.value)

    def refunds(self) -> list[dict[str, Any]]:
        """Every refund the simulator made, one per idempotency key."""
        raw = cast("dict[bytes, bytes]", self._cache.hgetall(f"{_PREFIX}:refunds"))
        return [json.loads(value) for value in raw.values()]

    def charges(self) -> list[dict[str, Any]]:
        """Every charge the simulator accepted: its ledger, to check nothing was charged twice."""
        raw = cast("dict[bytes, bytes]", self._cache.hgetall(f"{_PREFIX}:charges"))
        return [json.loads(value) for value in raw.values()]

    def charges_in_flight(self) -> int:
        """How many slow charges are being processed right now."""
        return int(cast("bytes | None", self._cache.get(f"{_PREFIX}:in_flight")) or 0)


class _SimulatedBugError(Exception):
    pass


def _decide(request: ChargeRequest) -> ChargeResult:
    rules = currency(request.currency)
    if request.amount < rules.minimum_charge or not rules.representable(request.amount):
        # Stripe answers an invalid_request_error (amount_too_small, or an amount the currency
        # cannot take); the gateway maps that to a decline.
        return ChargeResult(
            ChargeOutcome.DECLINED,
            None,
            "amount_too_small" if request.amount < rules.minimum_charge else "invalid_amount",
            f"{request.amount} is not a chargeable amount of {request.currency}.",
        )
    if request.payment_method in _DECLINES:
        code, message = _DECLINES[request.payment_method]
        return ChargeResult(ChargeOutcome.DECLINED, None, code, message)
    reference = f"pi_sim_{uuid.uuid4().hex}"
    if request.payment_method == SETTLES_LATER:
        return ChargeResult(ChargeOutcome.PENDING, reference)
    if request.payment_method == NEEDS_AUTHENTICATION:
        return ChargeResult(
            ChargeOutcome.DECLINED,
            reference,
            "authentication_required",
            "The card needs the customer to authenticate the payment.",
        )
    if request.payment_method in {CARD_SUCCEEDS, SLOW_CARD, REAL_GATEWAY_CARD}:
        return ChargeResult(ChargeOutcome.SUCCEEDED, reference)
    return ChargeResult(
        ChargeOutcome.DECLINED,
        None,
        "payment_method_unknown",
        f"The simulator does not know payment method {request.payment_method!r}.",
    )


def _result_fields(result: ChargeResult) -> dict[str, str | None]:
    return {
        "outcome": result.outcome.value,
        "reference": result.reference,
        "failure_code": result.failure_code,
        "failure_message": result.failure_message,
    }


def _fingerprint(request: ChargeRequest) -> str:
    material = f"{request.amount}|{request.currency}|{request.payment_method}|{request.invoice_id}"
    return hashlib.sha256(material.encode()).hexdigest()
