"""The OpenAPI document, completed with what the routes' signatures cannot say.

FastAPI derives paths, parameters (the Idempotency-Key header included) and bodies from the
handlers. This adds, for every operation, what the dependencies and middleware do to it: the
error statuses each can answer with and their body, the headers of the answers (request id,
rate limit, replay, Retry-After), the bearer scheme with the scope the operation needs (an
OpenAPI 3.1 security requirement may list roles for non-OAuth schemes:
https://spec.openapis.org/oas/v3.1.0#security-requirement-object), and links from each
operation that creates or finds a resource to the operations that take its id
(https://spec.openapis.org/oas/v3.1.0#link-object), which schemathesis follows in its
stateful phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from services.api.dependencies import BEARER_SCHEME
from services.api.idempotency import IDEMPOTENCY_HEADER, REPLAYED_HEADER
from services.api.middleware.context import REQUEST_ID_HEADER
from services.api.ratelimit import LIMIT_HEADER, REMAINING_HEADER, RETRY_AFTER_HEADER
from services.api.routes.webhooks import SIGNATURE_HEADER
from services.api.security import TokenScope

if TYPE_CHECKING:
    from fastapi import FastAPI

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
PUBLIC_PREFIX = "/v1/webhooks/"
HEADERS: dict[str, dict[str, Any]] = {
    REQUEST_ID_HEADER: {
        "description": "The request's id (the caller's, if plain); in every log line.",
        "schema": {"type": "string"},
    },
    LIMIT_HEADER: {
        "description": "Requests allowed per window for this principal (absent if not counted).",
        "schema": {"type": "integer"},
    },
    REMAINING_HEADER: {
        "description": "Requests left in the current window (absent if not counted).",
        "schema": {"type": "integer"},
    },
    RETRY_AFTER_HEADER: {
        "description": "Seconds until the window resets.",
        "schema": {"type": "integer"},
        "required": True,
    },
    REPLAYED_HEADER: {
        "description": f"`true` when this is the stored answer to an earlier request with the "
        f"same {IDEMPOTENCY_HEADER}; absent on the first execution.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
STATUS_TEXT = {
    400: "Malformed request: invalid JSON, a missing or malformed Idempotency-Key",
    401: "No bearer token, or one that is invalid or expired",
    403: "The token lacks the scope this operation needs",
    404: "No such resource in the caller's tenant",
    409: "The resource's state does not allow this now, or the key's request is still running",
    413: "The body is over the size limit",
    422: "A field is invalid, or the Idempotency-Key was used for another request",
    429: "Over the rate limit; retry after Retry-After seconds",
    503: "A dependency (the payment gateway) did not answer; retry with the same key",
}
ID = "$response.body#/id"
CHANGED = "$response.body#/subscription/id"
# (link name, target operationId, {target parameter: runtime expression}) per source operation.
LINKS: dict[str, list[tuple[str, str, dict[str, str]]]] = {
    "create_customer": [
        ("GetCustomer", "get_customer", {"customer_id": ID}),
        ("UpdateCustomer", "update_customer", {"customer_id": ID}),
        ("ListSubscriptionsOfCustomer", "list_subscriptions", {"customer_id": ID}),
        ("ListInvoicesOfCustomer", "list_invoices", {"customer_id": ID}),
        ("ListPaymentsOfCustomer", "list_payments", {"customer_id": ID}),
    ],
    "create_plan": [("GetPlan", "get_plan", {"plan_id": ID})],
    "create_subscription": [
        ("GetSubscription", "get_subscription", {"subscription_id": ID}),
        ("ChangePlan", "change_plan", {"subscription_id": ID}),
        ("CancelSubscription", "cancel_subscription", {"subscription_id": ID}),
        ("PauseSubscription", "pause_subscription", {"subscription_id": ID}),
        ("ResumeSubscription", "resume_subscription", {"subscription_id": ID}),
        ("ListInvoicesOfSubscription", "list_invoices", {"subscription_id": ID}),
        ("GetItsCustomer", "get_customer", {"customer_id": "$response.body#/customer_id"}),
        ("GetItsPlan", "get_plan", {"plan_id": "$response.body#/plan_id"}),
    ],
    "change_plan": [
        ("GetSubscription", "get_subscription", {"subscription_id": CHANGED}),
    ],
    "cancel_subscription": [
        ("GetSubscription", "get_subscription", {"subscription_id": ID}),
    ],
    "pause_subscription": [
        ("ResumeSubscription", "resume_subscription", {"subscription_id": ID}),
    ],
    "list_invoices": [
        ("GetInvoice", "get_invoice", {"invoice_id": "$response.body#/data/0/id"}),
        ("PayInvoice", "pay_invoice", {"invoice_id": "$response.body#/data/0/id"}),
        ("VoidInvoice", "void_invoice", {"invoice_id": "$response.body#/data/0/id"}),
    ],
    "get_invoice": [
        ("PayInvoice", "pay_invoice", {"invoice_id": ID}),
        ("VoidInvoice", "void_invoice", {"invoice_id": ID}),
        ("ListPaymentsOfInvoice", "list_payments", {"invoice_id": ID}),
    ],
    "pay_invoice": [
        ("GetInvoice", "get_invoice", {"invoice_id": "$response.body#/invoice/id"}),
        ("ListPaymentsOfInvoice", "list_payments", {"invoice_id": "$response.body#/invoice/id"}),
    ],
    "void_invoice": [("GetInvoice", "get_invoice", {"invoice_id": ID})],
    "list_payments": [("GetPayment", "get_payment", {"payment_id": "$response.body#/data/0/id"})],
}


def operation_id(route: APIRoute) -> str:
    """Operation ids are the handlers' names: what a generated client calls its functions."""
    return route.name


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            complete(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    components.setdefault("headers", {}).update(
        {name.replace("-", ""): header for name, header in HEADERS.items()}
    )
    scheme = components["securitySchemes"][BEARER_SCHEME]
    scheme["description"] += (
        ". Each operation's security requirement names the scope it needs (OpenAPI 3.1 roles)."
    )
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            _complete_operation(path, method.upper(), operation)
            for parameter in operation.get("parameters", []):
                # Declared optional so that its absence answers like a bad signature (400).
                if parameter["name"] == SIGNATURE_HEADER:
                    parameter["required"] = True


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    protected = path.startswith("/v1/") and not path.startswith(PUBLIC_PREFIX)
    parameters = operation.get("parameters", [])
    has_path_id = any(parameter["in"] == "path" for parameter in parameters)
    has_input = bool(parameters) or "requestBody" in operation
    statuses: set[int] = set()
    if protected:
        statuses |= {401, 403, 429}
        operation["security"] = [{BEARER_SCHEME: [_scope(method, operation)]}]
    else:
        operation["security"] = []
    if has_path_id and protected:
        statuses.add(404)
    if has_input:
        statuses.add(422)
    if "requestBody" in operation or method == "POST":
        statuses |= {400, 413}
    if protected and method == "POST":
        statuses.add(409)
    responses = operation.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(
            str(status),
            {
                "description": STATUS_TEXT[status],
                "content": {"application/json": {"schema": ERROR_BODY}},
            },
        )
    for status, response in responses.items():
        response["headers"] = _headers(int(status), method, protected=protected)
    links = LINKS.get(operation["operationId"])
    if links:
        success = next(status for status in responses if status.startswith("2"))
        responses[success]["links"] = {
            name: {"operationId": target, "parameters": parameters}
            for name, target, parameters in links
        }


def _scope(method: str, operation: dict[str, Any]) -> str:
    # Set by ADMIN_ONLY (services.api.dependencies) beside the dependency that enforces it.
    if "x-required-scope" in operation:
        return str(operation["x-required-scope"])
    return TokenScope.READ.value if method == "GET" else TokenScope.WRITE.value


def _headers(status: int, method: str, *, protected: bool) -> dict[str, Any]:
    names = [REQUEST_ID_HEADER]
    if protected and status not in {401, 403}:
        names += [LIMIT_HEADER, REMAINING_HEADER]
    if status == 429:
        names.append(RETRY_AFTER_HEADER)
    if protected and method == "POST" and (200 <= status < 300 or status in {402, 409}):
        names.append(REPLAYED_HEADER)
    return {name: {"$ref": f"#/components/headers/{name.replace('-', '')}"} for name in names}
