"""Per-tenant, gap-free invoice numbers given at finalisation; finalised invoices are immutable.

Invoices that exist before this migration are numbered per tenant in the order they were
created.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Once numbered, only the collection state of an invoice may change: status, attempts, the
# next attempt, the last error, when it was paid or voided. A line of a numbered invoice may
# not be added, changed or removed.
_IMMUTABLE_COLUMNS = (
    "tenant_id",
    "number",
    "customer_id",
    "subscription_id",
    "kind",
    "currency",
    "period_start",
    "period_end",
    "subtotal",
    "credit_applied",
    "amount_due",
    "carried_forward",
    "created_at",
)
_OLD = ", ".join(f"OLD.{column}" for column in _IMMUTABLE_COLUMNS)
_NEW = ", ".join(f"NEW.{column}" for column in _IMMUTABLE_COLUMNS)

_FUNCTIONS = f"""
CREATE FUNCTION billing_finalised_invoice_is_immutable() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF OLD.number IS NOT NULL THEN
      RAISE EXCEPTION 'invoice % (number %) is finalised and cannot be deleted', OLD.id, OLD.number
        USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN OLD;
  END IF;
  IF OLD.number IS NOT NULL AND ROW({_OLD}) IS DISTINCT FROM ROW({_NEW}) THEN
    RAISE EXCEPTION 'invoice % (number %) is finalised; only its collection state may change',
      OLD.id, OLD.number USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION billing_finalised_invoice_lines_are_immutable() RETURNS trigger AS $$
DECLARE
  finalised bigint;
BEGIN
  SELECT number INTO finalised FROM invoices
   WHERE id = (CASE WHEN TG_OP = 'DELETE' THEN OLD.invoice_id ELSE NEW.invoice_id END);
  IF finalised IS NOT NULL THEN
    RAISE EXCEPTION 'the lines of invoice number % are final', finalised
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END
$$ LANGUAGE plpgsql;
"""  # noqa: S608 - built from the constant column list above, no outside input


def upgrade() -> None:
    op.add_column("invoices", sa.Column("number", sa.BigInteger()))
    op.execute(
        """
        UPDATE invoices SET number = numbered.number
        FROM (SELECT id, row_number() OVER (PARTITION BY tenant_id ORDER BY created_at, id)
                     AS number
              FROM invoices) AS numbered
        WHERE invoices.id = numbered.id
        """
    )
    op.create_unique_constraint(
        op.f("uq_invoices_tenant_id_number"), "invoices", ["tenant_id", "number"]
    )
    op.create_table(
        "invoice_number_sequences",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_invoice_number_sequences")),
    )
    op.execute(
        "INSERT INTO invoice_number_sequences (tenant_id, last_number)"
        " SELECT tenant_id, max(number) FROM invoices GROUP BY tenant_id"
    )
    op.execute(_FUNCTIONS)
    op.execute(
        "CREATE TRIGGER finalised_invoice_is_immutable BEFORE UPDATE OR DELETE ON invoices"
        " FOR EACH ROW EXECUTE FUNCTION billing_finalised_invoice_is_immutable()"
    )
    op.execute(
        "CREATE TRIGGER finalised_invoice_lines_are_immutable"
        " BEFORE INSERT OR UPDATE OR DELETE ON invoice_lines"
        " FOR EACH ROW EXECUTE FUNCTION billing_finalised_invoice_lines_are_immutable()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER finalised_invoice_lines_are_immutable ON invoice_lines")
    op.execute("DROP TRIGGER finalised_invoice_is_immutable ON invoices")
    op.execute("DROP FUNCTION billing_finalised_invoice_lines_are_immutable()")
    op.execute("DROP FUNCTION billing_finalised_invoice_is_immutable()")
    op.drop_table("invoice_number_sequences")
    op.drop_constraint(op.f("uq_invoices_tenant_id_number"), "invoices", type_="unique")
    op.drop_column("invoices", "number")
