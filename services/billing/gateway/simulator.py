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

from services.billing.gateway.base import (
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
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
# Succeeds after SLOW_CHARGE_SECONDS, to watch requests and jobs in flight.
SLOW_CARD = "pm_sim_slow"
SLOW_CHARGE_SECONDS = 1.5

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

    def attach_payment_method(self, *, customer_reference: str, payment_method: str) -> None:
        del customer_reference, payment_method  # The token alone decides the outcome here.

    def charge(self, request: ChargeRequest) -> ChargeResult:
        result_key = f"{_PREFIX}:result:{request.idempotency_key}"
        fingerprint = _fingerprint(request)
        stored = self._cache.get(result_key)
        if stored is None:
            if request.payment_method == GATEWAY_UNAVAILABLE:
                raise GatewayUnavailableError("simulated gateway outage")
            if request.payment_method == SLOW_CARD:
                self._cache.incr(f"{_PREFIX}:in_flight")
                try:
                    time.sleep(SLOW_CHARGE_SECONDS)
                finally:
                    self._cache.decr(f"{_PREFIX}:in_flight")
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

    def charges(self) -> list[dict[str, Any]]:
        """Every charge the simulator accepted: its ledger, to check nothing was charged twice."""
        raw = cast("dict[bytes, bytes]", self._cache.hgetall(f"{_PREFIX}:charges"))
        return [json.loads(value) for value in raw.values()]

    def charges_in_flight(self) -> int:
        """How many slow charges are being processed right now."""
        return int(cast("bytes | None", self._cache.get(f"{_PREFIX}:in_flight")) or 0)


def _decide(request: ChargeRequest) -> ChargeResult:
    if request.payment_method in _DECLINES:
        code, message = _DECLINES[request.payment_method]
        return ChargeResult(ChargeOutcome.DECLINED, None, code, message)
    reference = f"pi_sim_{uuid.uuid4().hex}"
    if request.payment_method == SETTLES_LATER:
        return ChargeResult(ChargeOutcome.PENDING, reference)
    if request.payment_method in {CARD_SUCCEEDS, SLOW_CARD}:
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
