"""Idempotent POSTs served without FastAPI's routing and dependency system, when sound.

The POST counterpart of services/api/fast.py (read its docstring): `POST /v1/customers` and the
routes marked `@fast_write` are answered here when the request is sound: a JSON body that the
route's model accepts, declared by Content-Length, a bearer token the API accepts with the
write scope, and a well-formed Idempotency-Key. Anything else goes on to FastAPI before
anything is counted, claimed or written, with the body it sent, so every refusal of a request
that is not sound keeps FastAPI's own answer. A sound request goes through what the route's
dependencies do, in their order: the rate limit, the answer cache, the claim
(services/api/writes.py), then the route's own endpoint, called with the validated body; its
answers and refusals (429, 409, 422, a replay, 503 from the gateway) are written by the same
functions as FastAPI's error handlers. services/tests/test_fast_writes.py sends each request to
the app as built and to the same app without this, and compares their answers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from services.api.errors import billing_error_response, gateway_unavailable_response
from services.api.fast import accepted_caller, enter_route
from services.api.idempotency import IDEMPOTENCY_HEADER, StoredResponse
from services.api.middleware.limits import MAX_BODY_BYTES
from services.api.security import Principal, TokenScope
from services.api.writes import claim_request
from services.billing.errors import BillingError
from services.billing.gateway import GatewayUnavailableError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from starlette.responses import Response
    from starlette.routing import BaseRoute
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from services.api.dependencies import Runtime

    # What a marked endpoint is: called with the body, the runtime and the claimed key.
    WriteEndpoint = Callable[..., Awaitable[Response]]

Endpoint = TypeVar("Endpoint", bound="Callable[..., Any]")

_SERVED: dict[Callable[..., Any], type[BaseModel]] = {}
# The header's pattern (services.api.idempotency.KEY_PATTERN), matched whole.
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_KEY_HEADER = IDEMPOTENCY_HEADER.lower().encode()


def fast_write(body: type[BaseModel]) -> Callable[[Endpoint], Endpoint]:
    """Mark an idempotent POST endpoint `(body, runtime, claimed)` for FastWrites to serve."""

    def register(endpoint: Endpoint) -> Endpoint:
        _SERVED[endpoint] = body
        return endpoint

    return register


@dataclass(frozen=True)
class _Entry:
    body: type[BaseModel]
    endpoint: WriteEndpoint
    # FastAPI's route: its template names the request in metrics and logs.
    route: APIRoute


def served_writes(routes: Iterable[BaseRoute]) -> dict[str, _Entry]:
    """The marked routes by their path."""
    served: dict[str, _Entry] = {}
    for route in routes:
        if not isinstance(route, APIRoute) or route.endpoint not in _SERVED:
            continue
        if route.methods != {"POST"} or "{" in route.path or route.path in served:
            msg = f"{route.path}: @fast_write serves one POST route without parameters per path"
            raise ValueError(msg)
        served[route.path] = _Entry(_SERVED[route.endpoint], route.endpoint, route)
    return served


@dataclass(frozen=True)
class _Sound:
    """What FastAPI's dependencies and body validation would have let through."""

    caller: Principal
    key: str
    payload: BaseModel


class FastWrites:
    """ASGI middleware: answers sound idempotent POSTs itself, passes everything else on."""

    def __init__(self, app: ASGIApp, *, runtime: Runtime, routes: dict[str, _Entry]) -> None:
        self.app = app
        self._runtime = runtime
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            entry = self._routes.get(scope["path"])
        if entry is None:
            await self.app(scope, receive, send)
            return
        messages, body = await _read_body(scope, receive)
        sound = body is not None and self._sound(entry, scope, body)
        if not sound:
            await self.app(scope, _replay(messages, receive), send)
            return
        response = await self._answer(entry, sound, scope, _replay(messages, receive))
        await response(scope, receive, send)

    def _sound(self, entry: _Entry, scope: Scope, body: bytes) -> _Sound | None:
        """The request, if FastAPI would let it reach the route's endpoint; else None."""
        headers = [(name, value) for name, value in scope["headers"] if name in _CHECKED]
        keys = [value for name, value in headers if name == _KEY_HEADER]
        types = [value for name, value in headers if name == b"content-type"]
        if types != [b"application/json"] or len(keys) != 1:
            return None
        key = keys[0].decode("latin-1")
        if not _KEY.fullmatch(key):
            return None
        caller = accepted_caller(scope, self._runtime.tokens, TokenScope.WRITE)
        if caller is None:
            return None
        try:
            # As FastAPI reads a JSON body: Starlette's Request.json (json.loads), then the
            # model's validation of what it parsed (fastapi/routing.py, get_request_handler).
            payload = entry.body.model_validate(json.loads(body))
        except (ValueError, ValidationError):
            return None
        return _Sound(caller, key, payload)

    async def _answer(
        self, entry: _Entry, sound: _Sound, scope: Scope, receive: Receive
    ) -> Response:
        caller = sound.caller
        try:
            await enter_route(scope, entry.route, caller, self._runtime.rate_limiter)
            claimed = await claim_request(Request(scope, receive), caller.tenant_id, sound.key)
        except StoredResponse as stored:
            return stored.response()
        except BillingError as error:
            return billing_error_response(error)
        try:
            return await entry.endpoint(body=sound.payload, runtime=self._runtime, claimed=claimed)
        except BillingError as error:
            return billing_error_response(error)
        except GatewayUnavailableError as error:
            return gateway_unavailable_response(error)
        finally:
            await claimed.close()


_CHECKED = frozenset({_KEY_HEADER, b"content-type"})


async def _read_body(scope: Scope, receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages received and the body they carry; no body (None) unless Content-Length
    declared one no larger than BodyLimitMiddleware allows, and exactly it arrived."""
    declared = [value for name, value in scope["headers"] if name == b"content-length"]
    if len(declared) != 1 or not declared[0].isdigit() or int(declared[0]) > MAX_BODY_BYTES:
        return [], None
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return messages, body if len(body) == int(declared[0]) else None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives the messages already read again, then the server's own."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
