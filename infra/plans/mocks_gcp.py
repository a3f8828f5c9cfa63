"""GCP provider-assigned outputs and invoke answers for the offline runtime."""

from __future__ import annotations

from typing import Any

from infra.plans.mocks import COMPUTED, NewResource


def _global_address(resource: NewResource) -> dict[str, Any]:
    address = resource.inputs.get("address")
    # 203.0.113.0/24 is reserved for documentation: plainly not a real address.
    return {"address": address if isinstance(address, str) else "203.0.113.10"}


COMPUTED.update({
    "gcp:compute/globalAddress:GlobalAddress": _global_address,
})
