"""Log lines are JSON objects carrying the request id and the caller's extra fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.billing import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure_logging("api", "test", stream=stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logging.getLogger("uvicorn.access").disabled = False


def test_log_lines_are_json_with_request_id_and_extras(captured: io.StringIO) -> None:
    token = logs.request_id.set("req-42")
    try:
        logging.getLogger("billing.test").info("charged", extra={"invoice_id": "inv-1"})
    finally:
        logs.request_id.reset(token)
    entry = json.loads(captured.getvalue().splitlines()[-1])
    assert entry["message"] == "charged"
    assert entry["level"] == "info"
    assert entry["request_id"] == "req-42"
    assert entry["invoice_id"] == "inv-1"
    assert entry["service"] == "api"
    assert entry["environment"] == "test"


def test_exceptions_are_logged_inside_the_json(captured: io.StringIO) -> None:
    try:
        raise ValueError("boom")  # noqa: TRY301 - the exception is the subject here
    except ValueError:
        logging.getLogger("billing.test").exception("failed")
    entry = json.loads(captured.getvalue().splitlines()[-1])
    assert "ValueError: boom" in entry["exception"]
    assert "request_id" not in entry
