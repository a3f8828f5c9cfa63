"""`python -m services.api`: serve on BILLING_HOST, BILLING_PORT and BILLING_INTERNAL_PORT."""

from __future__ import annotations

import logging
import os
import sys

from services.api.app import create_app
from services.api.server import serve
from services.billing.config import ConfigError, Settings
from services.billing.logs import configure_logging


def main() -> int:
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
        },
    )
    serve(create_app(settings), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
