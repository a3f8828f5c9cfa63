"""`python -m services.bench_floor [--processes N]`: the floor under the API, for the benchmark.

The least an answer to `GET /v1/customers/{id}` can cost on this stack: verify the bearer token
(the API's own function, algorithm and key), one SELECT by primary key, JSON out, served by the
same uvicorn setup and process count as the API (services/api/server.py). `POST /v1/customers`
is its write counterpart: the token, one INSERT ... RETURNING, JSON out. Nothing else: no
routing framework, no validation beyond the token, no rate limit, no idempotency record, no
row-level security (it connects as the role that owns the tables' policies, DATABASE_USER as
the benchmark sets it, and filters by tenant in the statement). Never shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import uuid
from typing import TYPE_CHECKING, Any

import psycopg

from services.api.security import TokenRejectedError, verify_token
from services.api.server import serve
from services.billing.config import ConfigError, Settings

if TYPE_CHECKING:
    from starlette.types import Message, Receive, Scope, Send

    from services.billing.config import ApiSettings, DatabaseSettings

FACTORY = "services.bench_floor:application"
# Connections per process, as the API's pool keeps (services/billing/db.py).
CONNECTIONS = 10
_CUSTOMER = re.compile(r"^/v1/customers/([0-9a-fA-F-]{36})$")
_COLUMNS = "id, email, name, payment_method, currency, credit_balance, created_at"
_SELECT = f"SELECT {_COLUMNS} FROM customers WHERE id = %s AND tenant_id = %s"  # noqa: S608
_INSERT = (
    "INSERT INTO customers (id, tenant_id, email, name, payment_method) "  # noqa: S608
    f"VALUES (gen_random_uuid(), %s, %s, %s, %s) RETURNING {_COLUMNS}"
)
_JSON = [(b"content-type", b"application/json")]


def _customer(row: tuple[Any, ...]) -> bytes:
    id_, email, name, payment_method, currency, credit_balance, created_at = row
    return json.dumps(
        {
            "id": str(id_),
            "email": email,
            "name": name,
            "payment_method": payment_method,
            "currency": currency,
            "credit_balance": credit_balance,
            "created_at": created_at.isoformat(),
        }
    ).encode()


class Floor:
    """A raw ASGI app over a fixed set of autocommit connections."""

    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()

    async def _connect(self, database: DatabaseSettings) -> None:
        for _ in range(CONNECTIONS):
            connection = await psycopg.AsyncConnection.connect(
                host=database.host,
                port=database.port,
                dbname=database.name,
                user=database.user,
                password=database.password,
                autocommit=True,
            )
            self._idle.put_nowait(connection)

    async def _query(self, statement: str, parameters: tuple[Any, ...]) -> tuple[Any, ...] | None:
        connection = await self._idle.get()
        try:
            cursor = await connection.execute(statement, parameters)
            return await cursor.fetchone()
        finally:
            self._idle.put_nowait(connection)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        status, body = await self._answer(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": _JSON})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                await self._connect(self._settings.settings.database)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                while not self._idle.empty():
                    await self._idle.get_nowait().close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            return 200, b'{"status":"ok"}'
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode()
        try:
            caller = verify_token(authorization.removeprefix("Bearer "), self._settings.jwt)
        except TokenRejectedError as error:
            return 401, json.dumps({"error": {"code": error.code}}).encode()
        found = _CUSTOMER.match(path)
        if method == "GET" and found:
            row = await self._query(_SELECT, (uuid.UUID(found[1]), caller.tenant_id))
            return (200, _customer(row)) if row else (404, b'{"error":{"code":"not_found"}}')
        if method == "POST" and path == "/v1/customers":
            body = await _read_body(receive)
            fields = json.loads(body)
            row = await self._query(
                _INSERT,
                (caller.tenant_id, fields["email"], fields["name"], fields.get("payment_method")),
            )
            assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
            return 201, _customer(row)
        return 404, b'{"error":{"code":"not_found"}}'


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def application() -> Floor:
    """One server process's floor app, from the API's variables."""
    return Floor(Settings.from_env(os.environ).for_api())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.bench_floor", description=__doc__)
    parser.add_argument("--processes", type=int, default=1)
    arguments = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ).for_api()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    serve(settings, processes=arguments.processes, factory=FACTORY)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
