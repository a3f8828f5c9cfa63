"""Fixtures shared across tests/infra: the stand-in Pulumi CLI (defined with its helpers)."""

from tests.infra.plans.conftest import standin

__all__ = ["standin"]
