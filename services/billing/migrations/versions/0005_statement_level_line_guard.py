"""Guard finalised invoices' lines once per statement rather than once per row.

A renewal batch inserts hundreds of lines in one statement; a row-level trigger ran a query
for each. Statement-level triggers see the statement's rows as transition tables
(https://www.postgresql.org/docs/15/sql-createtrigger.html), one event each, since a trigger
with transition tables may name only one event.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECK = """
CREATE FUNCTION billing_finalised_invoice_lines_are_final() RETURNS trigger AS $$
DECLARE
  finalised bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT i.number INTO finalised
      FROM changed_lines AS l JOIN invoices AS i ON i.id = l.invoice_id
     WHERE i.number IS NOT NULL LIMIT 1;
  ELSE
    SELECT i.number INTO finalised
      FROM previous_lines AS l JOIN invoices AS i ON i.id = l.invoice_id
     WHERE i.number IS NOT NULL LIMIT 1;
  END IF;
  IF finalised IS NOT NULL THEN
    RAISE EXCEPTION 'the lines of invoice number % are final', finalised
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;
"""
_TRIGGERS = {
    "finalised_invoice_lines_insert": "AFTER INSERT ON invoice_lines"
    " REFERENCING NEW TABLE AS changed_lines",
    "finalised_invoice_lines_update": "AFTER UPDATE ON invoice_lines"
    " REFERENCING OLD TABLE AS previous_lines",
    "finalised_invoice_lines_delete": "AFTER DELETE ON invoice_lines"
    " REFERENCING OLD TABLE AS previous_lines",
}


def upgrade() -> None:
    op.execute("DROP TRIGGER finalised_invoice_lines_are_immutable ON invoice_lines")
    op.execute(_CHECK)
    for name, when in _TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT"
            " EXECUTE FUNCTION billing_finalised_invoice_lines_are_final()"
        )


def downgrade() -> None:
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON invoice_lines")
    op.execute("DROP FUNCTION billing_finalised_invoice_lines_are_final()")
    op.execute(
        "CREATE TRIGGER finalised_invoice_lines_are_immutable"
        " BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines"
        " FOR EACH ROW EXECUTE FUNCTION billing_finalised_invoice_lines_are_immutable()"
    )
