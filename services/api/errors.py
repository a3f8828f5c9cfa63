"""Every error the API answers is {"error": {"code": ..., "message": ...}} with a stable code."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import compile_path

from services.billing.errors import BillingError
from services.billing.gateway import GatewayUnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import FastAPI
    from starlette.requests import Request

logger = logging.getLogger(__name__)

# Codes for errors Starlette raises itself (unknown route, wrong method).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


# Where FastAPI reports a missing or malformed Idempotency-Key header.
_KEY_LOCATION = ("header", "Idempotency-Key")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BillingError, _billing_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(GatewayUnavailableError, _gateway_unavailable)
    # Starlette gives the handler for Exception to its outermost middleware: the last resort.
    app.add_exception_handler(Exception, _unexpected_error)


def billing_error_response(error: BillingError) -> JSONResponse:
    """The answer to a refusal: its status, its code and message, and its headers if any."""
    headers: Mapping[str, str] | None = getattr(error, "headers", None)
    return error_response(error.status, error.code, error.message, headers=headers)


async def _billing_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, BillingError)  # noqa: S101 - registered for this type only
    return billing_error_response(error)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)  # noqa: S101 - registered for this type only
    problems = list(error.errors())
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return error_response(400, "invalid_json", "The request body is not valid JSON")
    key_problems = [problem for problem in problems if tuple(problem["loc"]) == _KEY_LOCATION]
    if key_problems:
        if key_problems[0].get("type") == "missing":
            return error_response(
                400, "idempotency_key_missing", "POST requests need an Idempotency-Key header"
            )
        return error_response(
            400,
            "idempotency_key_invalid",
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces",
        )
    details = [
        {"field": ".".join(str(part) for part in problem["loc"]), "message": problem["msg"]}
        for problem in problems
    ]
    summary = "; ".join(f"{detail['field']}: {detail['message']}" for detail in details)
    return error_response(422, "validation_error", summary, details=details)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)  # noqa: S101 - registered for this type only
    code = _HTTP_CODES.get(error.status_code, f"http_{error.status_code}")
    headers = dict(error.headers or {})
    if error.status_code == 405:
        # Starlette names only the methods of the first route on the path (one route per
        # method here); Allow must list every method the path has (RFC 9110, section 15.5.6),
        # exactly as the OpenAPI document does.
        headers["Allow"] = ", ".join(_documented_methods(request))
    return error_response(error.status_code, code, str(error.detail), headers=headers)


def _documented_methods(request: Request) -> list[str]:
    document = request.app.openapi()
    for template, operations in document["paths"].items():
        pattern, _, _ = compile_path(template)
        if pattern.match(request.url.path):
            return sorted(method.upper() for method in operations)
    return []


async def _gateway_unavailable(_: Request, error: Exception) -> JSONResponse:
    return gateway_unavailable_response(error)


def gateway_unavailable_response(error: Exception) -> JSONResponse:
    """The answer when the gateway did not answer: the outcome is unknown, the key retries."""
    logger.warning("payment gateway unavailable", extra={"error": str(error)})
    return error_response(
        503, "gateway_unavailable", "The payment gateway did not answer; retry with the same key"
    )


async def _unexpected_error(_: Request, error: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=error)
    return error_response(500, "internal_error", "Something went wrong on our side")
