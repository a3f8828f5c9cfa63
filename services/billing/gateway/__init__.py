"""The payment gateway seam: the billing rules charge through PaymentGateway, never an SDK."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.billing.config import GatewayKind, GatewaySettings
from services.billing.gateway.base import (
    ChargeOutcome,
    ChargeRequest,
    ChargeResult,
    GatewayConfigurationError,
    GatewayIdempotencyConflictError,
    GatewayUnavailableError,
    PaymentGateway,
    PaymentMethodRejectedError,
)
from services.billing.gateway.simulator import SimulatorGateway
from services.billing.gateway.stripe_gateway import StripeGateway

if TYPE_CHECKING:
    import redis

__all__ = [
    "ChargeOutcome",
    "ChargeRequest",
    "ChargeResult",
    "GatewayConfigurationError",
    "GatewayIdempotencyConflictError",
    "GatewayUnavailableError",
    "PaymentGateway",
    "PaymentMethodRejectedError",
    "SimulatorGateway",
    "StripeGateway",
    "build_gateway",
]


def build_gateway(settings: GatewaySettings, cache: redis.Redis) -> PaymentGateway:
    """The gateway PAYMENT_GATEWAY names; the simulator keeps its ledger in the cache."""
    if settings.kind is GatewayKind.STRIPE:
        return StripeGateway(settings.stripe_api_key)
    return SimulatorGateway(cache)
