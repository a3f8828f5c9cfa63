"""The API's routes, one module per resource."""

from typing import Any

from services.api.schemas import ErrorBody

# Documents the error shape for the statuses a route can answer with.
ERROR_STATUSES = (400, 401, 404, 409, 422, 429)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in (statuses or ERROR_STATUSES)}
