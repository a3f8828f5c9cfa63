"""The payment lifecycle (refunds, one attempt in flight, reconciliation) and carried amounts.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = ("pending", "succeeded", "failed")
_NEW_STATUSES = (*_OLD_STATUSES, "refunding", "refunded")


def _status_check(statuses: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_payments_payment_status"), "payments", type_="check")
    listed = ", ".join(f"'{status}'" for status in statuses)
    op.create_check_constraint(
        op.f("ck_payments_payment_status"), "payments", f"status IN ({listed})"
    )


def upgrade() -> None:
    _status_check(_NEW_STATUSES)
    op.add_column("payments", sa.Column("next_check_at", sa.DateTime(timezone=True)))
    op.create_index(
        "uq_payments_one_pending_per_invoice",
        "payments",
        ["invoice_id"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_payments_check_due",
        "payments",
        ["next_check_at", "id"],
        postgresql_where=sa.text("status IN ('pending', 'refunding')"),
    )
    op.add_column(
        "customers",
        sa.Column("debit_balance", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_customers_debit_balance_not_negative"), "customers", "debit_balance >= 0"
    )
    op.add_column(
        "invoices",
        sa.Column("carried_forward", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_invoices_carried_forward_not_negative"), "invoices", "carried_forward >= 0"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_invoices_carried_forward_not_negative"), "invoices", type_="check")
    op.drop_column("invoices", "carried_forward")
    op.drop_constraint(op.f("ck_customers_debit_balance_not_negative"), "customers", type_="check")
    op.drop_column("customers", "debit_balance")
    op.drop_index("ix_payments_check_due", table_name="payments")
    op.drop_index("uq_payments_one_pending_per_invoice", table_name="payments")
    op.drop_column("payments", "next_check_at")
    # Refund states have no earlier equivalent; money that went back counts as not taken.
    op.execute(
        "UPDATE payments SET status = 'failed', failure_code = 'refunded' "
        "WHERE status IN ('refunding', 'refunded')"
    )
    _status_check(_OLD_STATUSES)
