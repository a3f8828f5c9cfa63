"""`python -m services.worker.healthcheck`: exit 0 while the worker's heartbeat is fresh."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from services.worker.heartbeat import DEFAULT_HEARTBEAT_FILE

# Longer than the poll interval and one slow gateway call, so a busy worker is not killed.
DEFAULT_MAX_AGE_SECONDS = 120.0
# Cycles in a row that failed, or whose every charge ended in an error, before the worker is
# reported unhealthy (a gateway that refuses our key, a database that keeps failing).
DEFAULT_MAX_FAILING_CYCLES = 3


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.worker.healthcheck")
    parser.add_argument("--heartbeat-file", type=Path, default=DEFAULT_HEARTBEAT_FILE)
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_SECONDS)
    parser.add_argument("--max-failing-cycles", type=int, default=DEFAULT_MAX_FAILING_CYCLES)
    arguments = parser.parse_args(argv)
    try:
        age = time.time() - arguments.heartbeat_file.stat().st_mtime
        content = arguments.heartbeat_file.read_text()
    except FileNotFoundError:
        print(f"no heartbeat at {arguments.heartbeat_file}", file=sys.stderr)
        return 1
    if age > arguments.max_age:
        print(f"heartbeat is {age:.0f} s old", file=sys.stderr)
        return 1
    try:
        failing = int(json.loads(content or "{}").get("consecutive_failures", 0))
    except (ValueError, AttributeError):
        print(f"heartbeat {arguments.heartbeat_file} is not the worker's JSON", file=sys.stderr)
        return 1
    if failing >= arguments.max_failing_cycles:
        print(f"{failing} cycles in a row failed; see the worker's log", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
