"""The API's routes, one module per resource."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from services.api.schemas import ErrorBody
from services.billing.errors import BillingError, NotFoundError

# Documents the error shape for the statuses a route can answer with.
ERROR_STATUSES = (400, 401, 404, 409, 422, 429)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in (statuses or ERROR_STATUSES)}


@contextmanager
def body_references(**fields: str) -> Iterator[None]:
    """Ids named in the body that match nothing are 422, not 404: the operation's target (the
    path) exists; the request is what is wrong (RFC 9110, sections 15.5.5 and 15.5.21).

    fields maps a not-found code to the body field it comes from: plan_not_found="plan_id".
    """
    try:
        yield
    except NotFoundError as error:
        if error.code not in fields:
            raise
        raise BillingError(
            error.code, f"{fields[error.code]}: {error.message}", status=422
        ) from None
