"""Single-row reads in one prepared statement: a function per table sets the tenant, then reads.

The API reads a customer, a plan or a payment by id (services/api/reads.py) in one statement on
an autocommit connection, which PostgreSQL runs as its own transaction. The tenant must be set
for row-level security before the table is read, in that transaction: a PL/pgSQL function runs
its statements in order, so `billing_read_<table>(tenant, id)` sets it (set_config(..., true),
SET LOCAL, gone when the statement ends) and then returns the row, read with the invoker's
rights (SECURITY INVOKER, the default), so the policy of 0002 applies as to any query. The
SELECT also names the tenant. One statement, unlike the tenant's setting and the SELECT sent as
one simple-protocol query string, can be prepared (psycopg prepares a statement after its fifth
execution: https://www.psycopg.org/psycopg3/docs/advanced/prepare.html), and PL/pgSQL keeps the
SELECT's plan for the session
(https://www.postgresql.org/docs/15/plpgsql-implementation.html#PLPGSQL-PLAN-CACHING): a plan
made on a near-empty table is made again when ANALYZE updates the table's statistics, which
invalidates it, and the API's connections last 30 minutes at most. A lookup by primary key.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables the API reads one row of by id (services/api/fast.py serves them).
TABLES = ("customers", "plans", "payments")


def upgrade() -> None:
    for table in TABLES:
        op.execute(
            f"""
CREATE FUNCTION billing_read_{table}(tenant text, row_id uuid) RETURNS SETOF {table} AS $$
BEGIN
  PERFORM set_config('billing.tenant_id', tenant, true);
  RETURN QUERY SELECT * FROM {table} WHERE id = row_id AND tenant_id = tenant;
END
$$ LANGUAGE plpgsql VOLATILE SECURITY INVOKER;
"""  # noqa: S608 - table names from TABLES above
        )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP FUNCTION billing_read_{table}(text, uuid)")
