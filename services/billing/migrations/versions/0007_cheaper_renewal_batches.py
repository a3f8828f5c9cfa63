"""Cheaper renewal batches: invoices found by key by the lines' checks; lines may defer one.

Each tenant's invoice numbers are unique through a partial index (number IS NOT NULL) instead of
a unique constraint on (tenant_id, number): the same rule, since rows without a number never
conflicted, but an index no query that does not name a number can use. The foreign-key check of
every line (SELECT 1 FROM invoices WHERE tenant_id = $1 AND id = $2 FOR KEY SHARE, planned once
per connection) saw two equally good-looking indexes while invoices was young, took (tenant_id,
number), and then read all of the tenant's invoices for each line: the renewal benchmark's
quadratic slowdown.

0005's guard joined the statement's lines to invoices. PL/pgSQL plans a static query once per
session and keeps the plan
(https://www.postgresql.org/docs/15/plpgsql-implementation.html#PLPGSQL-PLAN-CACHING); planned
while invoices was empty or small (a new database, a fresh worker), it was a nested loop over a
sequential scan of invoices, and each renewal batch's insert then read the whole table once per
line, slower as invoices grew (400 ms for 500 lines at 4,000 invoices, most of a batch). Now the
query is planned at each call (EXECUTE, which sees the statement's transition tables too) and
looks each line's invoice up in a scalar subquery: one the planner does not flatten into a join,
so at any size past a few pages it is one primary-key probe per line.

The lines' reference to their invoice becomes DEFERRABLE INITIALLY IMMEDIATE: checked at once as
before unless a transaction defers it, as renewal does to write a batch's lines before their
invoices, which are then inserted finalised (numbered) instead of numbered by a second write of
each. The check itself is unchanged; deferred, it runs at commit
(https://www.postgresql.org/docs/15/sql-set-constraints.html).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _guard(lookup: str) -> str:
    """The guard's function, finding the first finalised invoice among the lines with lookup."""
    return f"""
CREATE OR REPLACE FUNCTION billing_finalised_invoice_lines_are_final() RETURNS trigger AS $$
DECLARE
  finalised bigint;
BEGIN
{lookup}
  IF finalised IS NOT NULL THEN
    RAISE EXCEPTION 'the lines of invoice number % are final', finalised
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
"""


_BY_KEY = """
  EXECUTE format(
    'SELECT number FROM (SELECT (SELECT i.number FROM invoices AS i WHERE i.id = l.invoice_id)'
    ' AS number FROM %I AS l) AS line_invoice WHERE number IS NOT NULL LIMIT 1',
    CASE WHEN TG_OP = 'INSERT' THEN 'changed_lines' ELSE 'previous_lines' END
  ) INTO finalised;
"""
# 0005's lookup, for the downgrade (a migration keeps its own copy of what it restores).
_JOINED = """
  IF TG_OP = 'INSERT' THEN
    SELECT i.number INTO finalised
      FROM changed_lines AS l JOIN invoices AS i ON i.id = l.invoice_id
     WHERE i.number IS NOT NULL LIMIT 1;
  ELSE
    SELECT i.number INTO finalised
      FROM previous_lines AS l JOIN invoices AS i ON i.id = l.invoice_id
     WHERE i.number IS NOT NULL LIMIT 1;
  END IF;
"""
_LINE_INVOICE_KEY = "ALTER TABLE invoice_lines ALTER CONSTRAINT fk_invoice_lines_tenant_id_invoices"


def upgrade() -> None:
    op.drop_constraint("uq_invoices_tenant_id_number", "invoices", type_="unique")
    op.create_index(
        "uq_invoices_tenant_id_number",
        "invoices",
        ["tenant_id", "number"],
        unique=True,
        postgresql_where=sa.text("number IS NOT NULL"),
    )
    op.execute(_guard(_BY_KEY))
    op.execute(f"{_LINE_INVOICE_KEY} DEFERRABLE INITIALLY IMMEDIATE")


def downgrade() -> None:
    op.execute(f"{_LINE_INVOICE_KEY} NOT DEFERRABLE")
    op.execute(_guard(_JOINED))
    op.drop_index("uq_invoices_tenant_id_number", table_name="invoices")
    op.create_unique_constraint("uq_invoices_tenant_id_number", "invoices", ["tenant_id", "number"])
