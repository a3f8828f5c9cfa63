"""Engine and sessions for the billing database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from services.billing.config import DatabaseSettings


def create_database_engine(database: DatabaseSettings, *, pool_size: int = 10) -> Engine:
    return create_engine(
        database.url(),
        pool_size=pool_size,
        max_overflow=pool_size,
        # RDS and Cloud SQL fail over by moving the endpoint; stale pooled connections then error.
        pool_pre_ping=True,
        connect_args={"application_name": "billing"},
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # Objects stay readable after commit: handlers serialize them after the transaction ends.
    return sessionmaker(engine, expire_on_commit=False)
