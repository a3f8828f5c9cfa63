"""`python -m services.api [--processes N]`: serve on BILLING_HOST, BILLING_PORT and
BILLING_INTERNAL_PORT, with N server processes (the container's command sets N)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from services.api.app import create_app
from services.api.server import PortSplitMiddleware, serve
from services.billing.config import ConfigError, Settings
from services.billing.logs import configure_logging

if TYPE_CHECKING:
    from starlette.types import ASGIApp


def application() -> ASGIApp:
    """The app one server process serves, from the environment (checked by main first)."""
    settings = Settings.from_env(os.environ).for_api()
    configure_logging("api", settings.settings.environment)
    return PortSplitMiddleware(create_app(settings), internal_port=settings.internal_port)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api", description=__doc__)
    parser.add_argument(
        "--processes", type=int, default=1, help="server processes sharing the ports (default 1)"
    )
    arguments = parser.parse_args(argv)
    if arguments.processes < 1:
        parser.error("--processes must be at least 1")
    try:
        settings = Settings.from_env(os.environ).for_api()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("api", settings.settings.environment)
    logging.getLogger(__name__).info(
        "starting",
        extra={
            "host": settings.settings.bind_host,
            "port": settings.port,
            "internal_port": settings.internal_port,
            "gateway": settings.settings.gateway.kind.value,
            "processes": arguments.processes,
        },
    )
    serve(settings, processes=arguments.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
