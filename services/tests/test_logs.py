"""Log lines are JSON objects carrying the request id and the caller's extra fields."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from services.billing import logs


class Captured(io.StringIO):
    """What the root handler wrote, and how many writes it took."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


@pytest.fixture
def captured() -> Iterator[Captured]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = Captured()
    logs.configure_logging("api", "test", stream=stream)
    yield stream
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logging.getLogger("uvicorn.access").disabled = False


def flushed(stream: Captured) -> Captured:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return stream


def test_log_lines_are_json_with_request_id_and_extras(captured: Captured) -> None:
    token = logs.request_id.set("req-42")
    try:
        logging.getLogger("billing.test").info("charged", extra={"invoice_id": "inv-1"})
    finally:
        logs.request_id.reset(token)
    entry = flushed(captured).lines()[-1]
    assert entry["message"] == "charged"
    assert entry["level"] == "info"
    assert entry["request_id"] == "req-42"
    assert entry["invoice_id"] == "inv-1"
    assert entry["service"] == "api"
    assert entry["environment"] == "test"


def test_exceptions_are_logged_inside_the_json(captured: Captured) -> None:
    try:
        raise ValueError("boom")  # noqa: TRY301 - the exception is the subject here
    except ValueError:
        logging.getLogger("billing.test").exception("failed")
    # An error is written at once, without a flush.
    entry = captured.lines()[-1]
    assert "ValueError: boom" in entry["exception"]
    assert "request_id" not in entry


def test_info_lines_wait_and_go_out_together(captured: Captured) -> None:
    log = logging.getLogger("billing.test")
    log.info("first")
    log.info("second")
    assert captured.getvalue() == ""
    flushed(captured)
    assert [entry["message"] for entry in captured.lines()] == ["first", "second"]
    assert captured.writes == 1


def test_a_warning_writes_everything_before_it_at_once(captured: Captured) -> None:
    log = logging.getLogger("billing.test")
    log.info("before")
    log.warning("trouble")
    assert [entry["message"] for entry in captured.lines()] == ["before", "trouble"]
    assert captured.writes == 1


def test_lines_go_out_when_enough_gathered() -> None:
    stream = Captured()
    # No timer within the test: only the size writes.
    handler = logs.BatchedStreamHandler(stream, flush_seconds=3600)
    handler.setFormatter(logs.JsonFormatter("api", "test"))
    record = logging.LogRecord("billing.test", logging.INFO, "", 0, "x" * 1000, None, None)
    line = len(handler.format(record)) + 1
    try:
        sent = 0
        while stream.getvalue() == "":
            handler.handle(record)
            sent += 1
            assert sent * line < logs.FLUSH_BYTES + line
        assert sent * line >= logs.FLUSH_BYTES
        assert len(stream.lines()) == sent
        assert stream.writes == 1
    finally:
        handler.close()


def test_the_timer_writes_lines_without_help() -> None:
    stream = Captured()
    handler = logs.BatchedStreamHandler(stream, flush_seconds=0.05)
    handler.setFormatter(logs.JsonFormatter("api", "test"))
    try:
        handler.handle(logging.LogRecord("billing.test", logging.INFO, "", 0, "idle", None, None))
        assert stream.getvalue() == ""
        deadline = time.monotonic() + 5
        while stream.getvalue() == "" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [entry["message"] for entry in stream.lines()] == ["idle"]
    finally:
        handler.close()


def test_after_write_lines_at_once_each_line_goes_out_as_it_comes(captured: Captured) -> None:
    log = logging.getLogger("billing.test")
    log.info("gathered")
    logs.write_lines_at_once()
    assert [entry["message"] for entry in captured.lines()] == ["gathered"]
    log.info("shutting down")
    assert [entry["message"] for entry in captured.lines()] == ["gathered", "shutting down"]


def test_a_broken_stream_does_not_stop_the_caller(
    captured: Captured, capfd: pytest.CaptureFixture[str]
) -> None:
    captured.close()
    logging.getLogger("billing.test").warning("nowhere to go")
    assert "1 log lines not written" in capfd.readouterr().err


EXITS = """
import logging, os, signal, sys
from services.billing import logs
logs.configure_logging("api", "test")
for number in range(3):
    logging.getLogger("billing.test").info("line %d", number)
if sys.argv[1] == "signal":
    logs.write_lines_at_once()
    logging.getLogger("billing.test").info("last words")
    signal.raise_signal(signal.SIGTERM)
"""


@pytest.mark.parametrize("ending", ["normal", "signal"])
def test_a_process_leaves_every_line_whichever_way_it_ends(ending: str) -> None:
    # A normal exit flushes through logging.shutdown (atexit). The signal's default action runs
    # no exit handler, as when uvicorn re-raises SIGTERM; write_lines_at_once is what saves the
    # lines there.
    ended = subprocess.run(
        [sys.executable, "-c", EXITS, ending],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ended.returncode == (0 if ending == "normal" else -signal.SIGTERM), ended.stderr
    messages = [json.loads(line)["message"] for line in ended.stderr.splitlines()]
    expected = ["line 0", "line 1", "line 2"] + (["last words"] if ending == "signal" else [])
    assert messages == expected
