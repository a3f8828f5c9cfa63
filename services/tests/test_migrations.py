"""The migrations build exactly the models' schema, and unwind cleanly."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, pool

from services.billing.models import Base
from services.tests.conftest import Servers

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "billing" / "alembic.ini"


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


@pytest.fixture
def scratch_database(servers: Servers) -> Engine:
    with psycopg.connect(servers.postgres.conninfo("postgres"), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS billing_migrations")
        admin.execute("CREATE DATABASE billing_migrations")
    url = (
        f"postgresql+psycopg://{servers.postgres.user}:{servers.postgres.password}"
        f"@{servers.postgres.host}:{servers.postgres.port}/billing_migrations"
    )
    return create_engine(url, poolclass=pool.NullPool)


def test_downgrade_and_upgrade_round_trip(scratch_database: Engine) -> None:
    config = Config(str(ALEMBIC_INI))
    config.attributes["configure_logging"] = False
    with scratch_database.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        assert "invoices" in inspect(connection).get_table_names()
        command.downgrade(config, "base")
        assert inspect(connection).get_table_names() == ["alembic_version"]
        command.upgrade(config, "head")
        assert set(inspect(connection).get_table_names()) >= {
            table.name for table in Base.metadata.sorted_tables
        }
