"""`python -m services.api`: serve the API on BILLING_HOST (default 0.0.0.0) and BILLING_PORT."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from services.api.app import create_app
from services.billing.config import ConfigError, Settings
from services.billing.logs import configure_logging

# ECS and Cloud Run give a task 30 s between SIGTERM and SIGKILL; in-flight requests get most.
GRACEFUL_SHUTDOWN_SECONDS = 25


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
            "gateway": settings.settings.gateway.kind.value,
        },
    )
    uvicorn.run(
        create_app(settings),
        host=settings.settings.bind_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # Behind the load balancer: X-Forwarded-For names the client.
        proxy_headers=True,
        forwarded_allow_ips="*",
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
