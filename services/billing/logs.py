"""Structured JSON logs, one object per line, carrying the request id of the request at hand."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

# Set by the API for the duration of a request; log records pick it up from here.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}
# One encoder for every line: json.dumps with `default` builds a new JSONEncoder per call.
_ENCODE = json.JSONEncoder(default=str).encode


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, environment: str) -> None:
        super().__init__()
        self._service = service
        self._environment = environment

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
            "environment": self._environment,
            # Several server processes write to one stream (services/api/server.py).
            "pid": record.process,
        }
        current_request = request_id.get()
        if current_request is not None:
            entry["request_id"] = current_request
        entry.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODE(entry)


# How long a line may wait in BatchedStreamHandler's buffer, and how much may gather there.
FLUSH_SECONDS = 0.2
FLUSH_BYTES = 64 * 1024


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes its lines in batches rather than one write per line.

    The API logs a line per request, and a write per line cost a GET about 4% of its CPU
    (README, Benchmark). Lines gather in memory and are written together when FLUSH_BYTES have
    gathered, when a record at WARNING or above arrives (it and everything before it at once),
    when `flush_seconds` have passed (a daemon thread's timer), and at exit (logging.shutdown,
    which the logging module registers with atexit, flushes and closes every handler). nginx's
    access_log buffers the same way (`buffer=` and `flush=`,
    https://nginx.org/en/docs/http/ngx_http_log_module.html#access_log). What a process killed
    outright (SIGKILL, the kernel's OOM killer) held in its buffer, at most `flush_seconds` of
    lines, is lost. A process that may end by a re-raised signal, where atexit never runs, calls
    write_lines_at_once as it starts shutting down.
    """

    def __init__(self, stream: TextIO, *, flush_seconds: float = FLUSH_SECONDS) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._size = 0
        self._at_once = False
        self._stopped = threading.Event()
        self._timer = threading.Thread(
            target=self._flush_every, args=(flush_seconds,), name="log-flush", daemon=True
        )
        self._timer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - as StreamHandler.emit: report, never raise
            self.handleError(record)
            return
        # Called with the handler's lock held (Handler.handle).
        self._lines.append(line)
        self._size += len(line)
        if self._at_once or record.levelno >= logging.WARNING or self._size >= FLUSH_BYTES:
            self._write()

    def write_at_once(self) -> None:
        """Write what gathered, and from now on each line as it comes."""
        self._at_once = True
        self.flush()

    def _write(self) -> None:
        """Write what gathered; the caller holds the lock."""
        if not self._lines:
            return
        lines, self._lines, self._size = self._lines, [], 0
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError) as error:
            # A closed or broken stream must not stop the request that logged; say so where
            # one still can.
            if sys.__stderr__ is not None:
                with contextlib.suppress(OSError, ValueError):
                    sys.__stderr__.write(f"{len(lines)} log lines not written: {error}\n")

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
        finally:
            self.release()

    def _flush_every(self, seconds: float) -> None:
        while not self._stopped.wait(seconds):
            self.flush()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()


def write_lines_at_once() -> None:
    """Write the lines gathered so far, and each later one as it comes: for the end of a
    process that may exit by a signal, where atexit (and so logging.shutdown) never runs. The
    API's server is one: uvicorn re-raises the SIGTERM it caught once it has shut down
    (uvicorn/server.py, Server.capture_signals), and the default action ends the process there.
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BatchedStreamHandler):
            handler.write_at_once()


def configure_logging(
    service: str, environment: str, *, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Send every logger's records, uvicorn's included, through one JSON handler, which writes
    its lines in batches (BatchedStreamHandler)."""
    for previous in logging.getLogger().handlers:
        if isinstance(previous, BatchedStreamHandler):
            previous.close()
    handler = BatchedStreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service, environment))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The API logs each request itself, with its request id; uvicorn's access line would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
