"""Domain errors: each carries the stable code clients match on and the HTTP status to answer."""

from __future__ import annotations


class BillingError(Exception):
    """A request the billing rules refuse; code is stable, message is for people."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotFoundError(BillingError):
    def __init__(self, resource: str, identifier: object) -> None:
        super().__init__(f"{resource}_not_found", f"No {resource} with id {identifier}", status=404)


class ConflictError(BillingError):
    """The resource is in a state that does not allow the operation."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=409)


class PaymentDeclinedError(BillingError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=402)
