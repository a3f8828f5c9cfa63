"""`python -m services.worker.healthcheck`: exit 0 while the worker's heartbeat is fresh."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from services.worker.heartbeat import DEFAULT_HEARTBEAT_FILE

# Longer than the poll interval and one slow gateway call, so a busy worker is not killed.
DEFAULT_MAX_AGE_SECONDS = 120.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.worker.healthcheck")
    parser.add_argument("--heartbeat-file", type=Path, default=DEFAULT_HEARTBEAT_FILE)
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_SECONDS)
    arguments = parser.parse_args(argv)
    try:
        age = time.time() - arguments.heartbeat_file.stat().st_mtime
    except FileNotFoundError:
        print(f"no heartbeat at {arguments.heartbeat_file}", file=sys.stderr)
        return 1
    if age > arguments.max_age:
        print(f"heartbeat is {age:.0f} s old", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
