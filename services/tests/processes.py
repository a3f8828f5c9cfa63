"""Starting the services as the containers do (`python -m ...`) and waiting on them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def start_service(
    module: str, env: dict[str, str], *arguments: str, log: Path
) -> subprocess.Popen[bytes]:
    """Run `python -m module` from the repository root, its output going to a log file.

    A file rather than a pipe: a pipe nobody reads fills up and stalls the service.
    """
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", module, *arguments],
            cwd=REPOSITORY_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll until the condition holds; a deadline only so a broken build fails, not hangs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_while_progressing(
    done: Callable[[], bool], progress: Callable[[], object], *, stall: float, what: str
) -> None:
    """Poll until done, for as long as it takes while progress() keeps changing.

    For work whose duration depends on how loaded the machine is: only `stall` seconds without
    any change in progress fail the wait (a hang, a deadlock), however slow the run.
    """
    last = progress()
    deadline = time.monotonic() + stall
    while not done():
        now = progress()
        if now != last:
            last, deadline = now, time.monotonic() + stall
        elif time.monotonic() > deadline:
            raise AssertionError(f"no progress for {stall:.0f} s waiting for {what} (at {last})")
        time.sleep(0.05)


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], log: Path, *, timeout: float = 30
) -> None:
    def serving() -> bool:
        if process.poll() is not None:
            output = log.read_text(encoding="utf-8", errors="replace")
            raise AssertionError(f"the service exited with {process.returncode}: {output}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(serving, timeout=timeout, what=f"{url}/health")


def serving_pids(log: Path) -> set[int]:
    """The server processes that have finished starting, from their JSON log lines."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return {line["pid"] for line in lines if line["message"] == "Application startup complete."}


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
