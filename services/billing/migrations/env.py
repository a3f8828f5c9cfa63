"""Alembic environment: the database comes from the same variables the services read."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from services.billing.config import DatabaseSettings
from services.billing.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        # Two release tasks started at once must not both migrate.
        context.execute("SELECT pg_advisory_xact_lock(7265301)")
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported; run against a database")
    # Tests hand over an open connection; the release task connects from the environment.
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = create_engine(DatabaseSettings.from_env(os.environ).url(), poolclass=pool.NullPool)
    with engine.connect() as new_connection:
        run_migrations(new_connection)
    engine.dispose()


main()
