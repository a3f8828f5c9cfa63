"""Prometheus metrics the billing rules report, whichever process runs them."""

from __future__ import annotations

from prometheus_client import Counter

charge_attempts = Counter(
    "billing_charge_attempts_total",
    "Charge attempts on invoices, by gateway and outcome.",
    ["gateway", "outcome"],
)
