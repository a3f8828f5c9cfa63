"""Idempotency keys on every POST: one execution per key, replayed answers, reuse refused.

The record lives in PostgreSQL, in the request's own transaction: the request's first
statement claims the key (an INSERT into idempotency_keys), and its answer is written by the
same commit that keeps its effect. So a crash, a rollback or a lost Redis can never leave an
effect without its record, or a record without its effect. A concurrent request with the same
key waits on the claim's row for at most the connection's lock_timeout, then gets
`409 idempotency_request_in_progress`; once the first commits, it gets the stored answer.

Redis only caches answers that PostgreSQL already holds (read-through, behind a circuit
breaker), so a replay need not touch the database. Keys are scoped to the tenant and kept for
24 hours, like Stripe's (https://docs.stripe.com/api/idempotent_requests).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
import redis.asyncio
import redis.exceptions
from fastapi import Depends, Header, Request
from sqlalchemy import and_, bindparam, delete, func, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.responses import Response

from services.api.batches import Batches
from services.api.dependencies import CurrentPrincipal, DatabaseSession
from services.billing.errors import BillingError
from services.billing.locks import LOCK_NOT_AVAILABLE
from services.billing.models import IdempotencyKey

if TYPE_CHECKING:
    from collections.abc import Hashable
    from datetime import datetime

    from pydantic import BaseModel
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.dml import ReturningInsert

    from services.billing.cache import CircuitBreaker

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
KEY_LIFETIME = timedelta(hours=24)
# An unanswered claim that was committed (a handler that commits in steps) and is older than
# this belongs to a request that died; the same request may then take it over.
STALE_CLAIM = timedelta(minutes=2)
CACHE_PREFIX = "billing:idempotency:"
JSON = "application/json"


class IdempotencyError(BillingError):
    """The key cannot be used for this request now (in use, or used for another request)."""


def in_progress() -> IdempotencyError:
    return IdempotencyError(
        "idempotency_request_in_progress",
        "A request with this idempotency key is still running; retry shortly",
        status=409,
    )


def reused() -> IdempotencyError:
    return IdempotencyError(
        "idempotency_key_reused",
        "This idempotency key was used for a different request; use a new key",
        status=422,
    )


class StoredResponse(Exception):  # noqa: N818 - raised to answer, not an error
    """The answer already given for this key; the API sends it again as it was."""

    def __init__(
        self, *, fingerprint: str, status: int, content_type: str | None, body: bytes
    ) -> None:
        super().__init__(status)
        self.fingerprint = fingerprint
        self.status = status
        self.content_type = content_type
        self.body = body

    def to_cache(self) -> str:
        return json.dumps(
            {
                "fingerprint": self.fingerprint,
                "status": self.status,
                "content_type": self.content_type,
                "body": base64.b64encode(self.body).decode(),
            }
        )

    @classmethod
    def from_cache(cls, raw: bytes | str) -> StoredResponse:
        record = json.loads(raw)
        return cls(
            fingerprint=record["fingerprint"],
            status=int(record["status"]),
            content_type=record["content_type"],
            body=base64.b64decode(record["body"]),
        )

    def response(self) -> Response:
        headers = {REPLAYED_HEADER: "true"}
        return Response(self.body, self.status, headers=headers, media_type=self.content_type)


class Idempotency:
    """A claimed key: the handler answers through it, in the transaction of its effect."""

    def __init__(self, session: Session, tenant_id: str, key: str) -> None:
        self._session = session
        self._tenant_id = tenant_id
        self.key = key

    def respond(self, payload: BaseModel, *, status: int = 200) -> Response:
        """Store the answer with the work the session holds, commit both, and return it."""
        return self._commit(status, payload.model_dump_json().encode())

    def respond_error(self, status: int, code: str, message: str) -> Response:
        """An error answer that follows recorded work (a decline): stored and replayed too."""
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        return self._commit(status, body)

    def release(self) -> None:
        """Give the key up within this transaction: what was done may be retried with it."""
        self._session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == self._tenant_id, IdempotencyKey.key == self.key
            )
        )

    def _commit(self, status: int, body: bytes) -> Response:
        self._session.execute(
            STORE_ANSWER, answer_parameters(self._tenant_id, self.key, status, body)
        )
        self._session.commit()
        return Response(body, status, media_type=JSON)


def _claim_statement() -> ReturningInsert[tuple[datetime]]:
    now = func.now()
    values = insert(IdempotencyKey).values(
        tenant_id=bindparam("tenant"),
        key=bindparam("idempotency_key"),
        fingerprint=bindparam("request_fingerprint"),
        created_at=now,
        claimed_at=now,
    )
    return values.on_conflict_do_update(
        index_elements=[IdempotencyKey.tenant_id, IdempotencyKey.key],
        set_={
            "fingerprint": values.excluded.fingerprint,
            "created_at": values.excluded.created_at,
            "claimed_at": values.excluded.claimed_at,
            "status_code": null(),
            "content_type": null(),
            "response_body": null(),
        },
        # Only an expired key, or a dead request's claim on the same request, is taken over.
        where=or_(
            IdempotencyKey.created_at < now - bindparam("key_lifetime", KEY_LIFETIME),
            and_(
                IdempotencyKey.status_code.is_(None),
                IdempotencyKey.claimed_at < now - bindparam("stale_claim", STALE_CLAIM),
                IdempotencyKey.fingerprint == values.excluded.fingerprint,
            ),
        ),
        # The claim's time is the transaction's (now()): the effect may stamp its rows with it.
    ).returning(IdempotencyKey.created_at)


# The request's first statement: None returned if another request holds the key.
CLAIM = _claim_statement()
# What the key already holds, when the claim did not take it.
EXISTING = select(
    IdempotencyKey.fingerprint,
    IdempotencyKey.status_code,
    IdempotencyKey.content_type,
    IdempotencyKey.response_body,
).where(
    IdempotencyKey.tenant_id == bindparam("tenant"),
    IdempotencyKey.key == bindparam("idempotency_key"),
)
# The answer, written by the commit that keeps the effect.
STORE_ANSWER = (
    update(IdempotencyKey)
    .where(
        IdempotencyKey.tenant_id == bindparam("tenant"),
        IdempotencyKey.key == bindparam("idempotency_key"),
    )
    .values(
        status_code=bindparam("answer_status"),
        content_type=bindparam("answer_type"),
        response_body=bindparam("answer_body"),
    )
)


def claim_parameters(tenant_id: str, key: str, fingerprint: str) -> dict[str, str]:
    """CLAIM's parameters (EXISTING takes the first two)."""
    return {"tenant": tenant_id, "idempotency_key": key, "request_fingerprint": fingerprint}


def answer_parameters(tenant_id: str, key: str, status: int, body: bytes) -> dict[str, Any]:
    """STORE_ANSWER's parameters: a JSON answer."""
    return {
        "tenant": tenant_id,
        "idempotency_key": key,
        "answer_status": status,
        "answer_type": JSON,
        "answer_body": body,
    }


def stored_answer(
    fingerprint: str,
    stored_fingerprint: str,
    status: int | None,
    content_type: str | None,
    body: bytes | None,
) -> StoredResponse:
    """The answer an EXISTING row holds for this request; IdempotencyError if it holds none."""
    if stored_fingerprint != fingerprint:
        raise reused()
    if status is None or body is None:
        raise in_progress()
    return StoredResponse(
        fingerprint=stored_fingerprint, status=status, content_type=content_type, body=body
    )


def claim(session: Session, tenant_id: str, key: str, fingerprint: str) -> StoredResponse | None:
    """Claim the key in the session's transaction; None if claimed, else the stored answer.

    Raises IdempotencyError when the key is in use or was used for another request.
    """
    parameters = claim_parameters(tenant_id, key, fingerprint)
    try:
        # Waits while another transaction holds an uncommitted claim on the key, for at most
        # lock_timeout (services.billing.db): "waiting for a lock" includes waiting for the
        # inserting transaction (https://www.postgresql.org/docs/15/runtime-config-client.html).
        claimed = session.execute(CLAIM, parameters).first()
    except OperationalError as error:
        if getattr(error.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        session.rollback()
        raise in_progress() from error
    if claimed is not None:
        return None
    existing = session.execute(EXISTING, parameters).one()
    session.rollback()
    return stored_answer(fingerprint, *existing)


def request_digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()


class AnswerCache:
    """Answers PostgreSQL holds, kept in Redis for the key's lifetime; misses are harmless.

    Lookups that arrive while one is on its way to Redis wait and go together in the next call
    (one MGET), as the rate limit's counts do (services/api/ratelimit.py): a lone lookup is one
    GET's round trip, a process's 32 concurrent POSTs a few calls instead of 32.
    """

    def __init__(self, cache: redis.asyncio.Redis, breaker: CircuitBreaker) -> None:
        self._cache = cache
        self._breaker = breaker
        # One group: every lookup of the process goes in the next MGET (services/api/batches.py).
        # Cancelled (the server stopping): the lookups waiting are misses, and PostgreSQL
        # answers them.
        self._lookups: Batches[str, bytes | str | None] = Batches(
            self._lookup_batch, unanswered=None
        )

    async def get(self, cache_key: str) -> StoredResponse | None:
        raw = await self._lookups.submit(None, cache_key)
        return StoredResponse.from_cache(raw) if raw is not None else None

    async def _lookup_batch(self, _: Hashable, keys: list[str]) -> list[bytes | str | None]:
        return await self._lookup(keys)

    async def _lookup(self, keys: list[str]) -> list[bytes | str | None]:
        try:
            found: list[bytes | str | None] = await self._breaker.call(
                lambda: self._cache.mget(keys)
            )
        except redis.exceptions.RedisError:
            return [None] * len(keys)
        return found

    async def put(self, cache_key: str, answer: StoredResponse) -> None:
        ttl = int(KEY_LIFETIME.total_seconds())
        try:
            await self._breaker.call(lambda: self._cache.set(cache_key, answer.to_cache(), ex=ttl))
        except redis.exceptions.RedisError:
            logger.info("idempotency answer not cached")


IdempotencyKeyHeader = Annotated[
    str,
    Header(
        alias=IDEMPOTENCY_HEADER,
        pattern=KEY_PATTERN,
        description=(
            "Unique per intended operation (a UUID is a good choice), 1-255 printable ASCII "
            "characters without spaces. A retry with the same key and body gets the first "
            "answer again, with Idempotent-Replayed: true; keys are kept 24 hours."
        ),
    ),
]


@dataclass(frozen=True)
class KeyedRequest:
    """A request's key, what identifies the request itself, and where its answer is cached."""

    tenant_id: str
    key: str
    fingerprint: str
    cache_key: str


async def keyed_request(request: Request, tenant_id: str, key: str) -> KeyedRequest:
    """The request under its key; raises the cached answer if Redis holds one for the key."""
    body = await request.body()
    fingerprint = request_digest(
        request.method.encode(), request.url.path.encode(), request.url.query.encode(), body
    )
    cache_key = CACHE_PREFIX + request_digest(tenant_id.encode(), key.encode())
    cached = await answer_cache(request).get(cache_key)
    if cached is not None:
        if cached.fingerprint != fingerprint:
            raise reused()
        raise cached
    return KeyedRequest(tenant_id, key, fingerprint, cache_key)


def answer_cache(request: Request) -> AnswerCache:
    answers: AnswerCache = request.app.state.answers
    return answers


async def idempotent(
    request: Request,
    key: IdempotencyKeyHeader,
    session: DatabaseSession,
    caller: CurrentPrincipal,
) -> Idempotency:
    """Claim the request's key, or answer with what the key already answered."""
    keyed = await keyed_request(request, caller.tenant_id, key)
    arguments = (session, keyed.tenant_id, key, keyed.fingerprint)
    try:
        stored = await anyio.to_thread.run_sync(claim, *arguments)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        # The request's first statement met a connection that died in the pool (a failover;
        # no pre-ping, services/billing/db.py): nothing was done yet, so claim again. SQLAlchemy
        # has dropped that connection and every older one, so this runs on a new one.
        await anyio.to_thread.run_sync(session.rollback)
        stored = await anyio.to_thread.run_sync(claim, *arguments)
    if stored is None:
        return Idempotency(session, caller.tenant_id, key)
    await answer_cache(request).put(keyed.cache_key, stored)
    raise stored


Idempotent = Annotated[Idempotency, Depends(idempotent)]


def replay(_: Any, answer: Exception) -> Response:
    """Exception handler: send a stored answer again."""
    assert isinstance(answer, StoredResponse)  # noqa: S101 - registered for this type only
    return answer.response()
