"""Single-row reads served without FastAPI's routing and dependency system, when sound.

`GET /v1/customers/{id}` and its kind (the routes marked `@fast_path`) are most of the API's
traffic, and FastAPI's own per-request work (routing, dependency resolution, parameter
validation) costs about as much CPU as the read itself. FastPath answers such a request
itself when it is sound: a canonical UUID in the path, a bearer token the API accepts, the
read scope. Anything else (no token, a refused one, a malformed id, another method) goes on to
FastAPI untouched, before anything is counted or read, so every refusal keeps FastAPI's own
answer. A sound request gets what FastAPI's route gives, byte for byte (services/tests/
test_fast_path.py compares the two): the rate limit counted, its quota and the request id as
headers (RequestContextMiddleware, which wraps this), 429 or 404 as the error handlers write
them, the row as the route's response model serializes it. The routes stay the documented
operations (the OpenAPI document is FastAPI's) and serve whatever this passes on.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param
from starlette.responses import Response

from services.api.errors import billing_error_response
from services.api.security import TokenRejectedError, TokenScope
from services.billing.errors import BillingError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Receive, Scope, Send

    from services.api.dependencies import Runtime
    from services.api.ratelimit import RateLimiter
    from services.api.reads import SingleRow
    from services.api.security import Principal, TokenVerifier

Endpoint = TypeVar("Endpoint", bound="Callable[..., Any]")

_SERVED: dict[Callable[..., Any], SingleRow[Any]] = {}
# The id as a client sends it (hyphenated, either case). FastAPI's UUID parameter also accepts
# other spellings (no hyphens, braces, a urn: prefix); those go to FastAPI.
_CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_JSON = "application/json"


def fast_path(spec: SingleRow[Any]) -> Callable[[Endpoint], Endpoint]:
    """Mark a `GET <prefix>/{id}` endpoint that reads `spec`'s row, for FastPath to serve."""

    def register(endpoint: Endpoint) -> Endpoint:
        _SERVED[endpoint] = spec
        return endpoint

    return register


@dataclass(frozen=True)
class _Entry:
    spec: SingleRow[Any]
    # FastAPI's route: its template names the request in metrics and logs.
    route: APIRoute


def served_routes(routes: Iterable[BaseRoute]) -> dict[str, _Entry]:
    """The marked routes by their path's prefix ("/v1/customers" for "/v1/customers/{id}")."""
    served: dict[str, _Entry] = {}
    for route in routes:
        if not isinstance(route, APIRoute) or route.endpoint not in _SERVED:
            continue
        prefix, _, last = route.path.rpartition("/")
        parameters = re.findall(r"{[^}]*}", route.path)
        if route.methods != {"GET"} or parameters != [last] or prefix in served:
            msg = f"{route.path}: @fast_path serves one GET <prefix>/{{id}} route per prefix"
            raise ValueError(msg)
        served[prefix] = _Entry(_SERVED[route.endpoint], route)
    return served


def bearer_token(scope: Scope) -> str | None:
    """The credentials of the first Authorization header, as FastAPI's HTTPBearer reads them
    (fastapi/security/http.py: the scheme, case-insensitive, then the rest stripped)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, credentials = get_authorization_scheme_param(value.decode("latin-1"))
            if scheme.lower() != "bearer" or not credentials:
                return None
            return credentials
    return None


def accepted_caller(scope: Scope, tokens: TokenVerifier, needed: TokenScope) -> Principal | None:
    """The caller, if the request's bearer token is one the API accepts and grants `needed`;
    None otherwise, for FastAPI to answer (401 or 403)."""
    token = bearer_token(scope)
    if token is None:
        return None
    try:
        caller = tokens.verify(token)
    except TokenRejectedError:
        return None
    return caller if caller.allows(needed) else None


async def enter_route(
    scope: Scope, route: APIRoute, caller: Principal, rate_limiter: RateLimiter
) -> None:
    """Leave what FastAPI's routing and the route's dependencies leave for
    RequestContextMiddleware (the route, the caller, the quota), counting the request against
    the caller's rate limit first, as the dependencies do: RateLimitedError past it."""
    scope["route"] = route
    state = scope.setdefault("state", {})
    state["principal"] = caller
    state["quota"] = await rate_limiter.take(caller.key)


class FastPath:
    """ASGI middleware: answers sound single-row reads itself, passes everything else on."""

    def __init__(self, app: ASGIApp, *, runtime: Runtime, routes: dict[str, _Entry]) -> None:
        self.app = app
        self._runtime = runtime
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            prefix, _, last = scope["path"].rpartition("/")
            entry = self._routes.get(prefix)
            if entry is not None and _CANONICAL_UUID.fullmatch(last):
                response = await self._answer(entry, uuid.UUID(last), scope)
                if response is not None:
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, entry: _Entry, row_id: uuid.UUID, scope: Scope) -> Response | None:
        """The answer to a sound request; None, having done nothing, for FastAPI to answer."""
        caller = accepted_caller(scope, self._runtime.tokens, TokenScope.READ)
        if caller is None:
            return None
        spec = entry.spec
        try:
            await enter_route(scope, entry.route, caller, self._runtime.rate_limiter)
            row = await self._runtime.rows.fetch(spec.model, caller.tenant_id, row_id)
            if row is None:
                raise NotFoundError(spec.resource, row_id)
        except BillingError as error:
            return billing_error_response(error)
        # As FastAPI serializes a response model (fastapi/routing.py, serialize_response with
        # dump_json: pydantic's JSON, by alias, into a plain Response of application/json).
        body = spec.schema.__pydantic_serializer__.to_json(
            spec.schema.model_validate(row), by_alias=True
        )
        return Response(body, media_type=_JSON)
