"""Tenancy: every row belongs to a tenant; references stay inside it; row-level security.

Rows that exist before this migration are given to the tenant "default".

Row-level security is the second wall behind the API's scoped queries: a connection sees a
tenant's rows only after `SET LOCAL billing.tenant_id` (the API, per transaction), or every
tenant's after `SET LOCAL billing.all_tenants = 'on'` (the worker and the gateway's webhooks,
services.billing.db). A connection that set neither sees nothing. FORCE applies the policies
to the tables' owner too, which is the role the services connect as; superusers and roles with
BYPASSRLS are never subject to them
(https://www.postgresql.org/docs/15/ddl-rowsecurity.html). Foreign-key checks bypass row
security, so the composite keys below hold regardless.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ("customers", "plans", "subscriptions", "invoices", "invoice_lines", "payments")
# Tables other rows reference by (tenant_id, id).
REFERENCED_TABLES = ("customers", "plans", "subscriptions", "invoices")
# (table, column, referenced table): the single-column keys that become (tenant_id, column).
REFERENCES = (
    ("subscriptions", "customer_id", "customers"),
    ("subscriptions", "plan_id", "plans"),
    ("invoices", "customer_id", "customers"),
    ("invoices", "subscription_id", "subscriptions"),
    ("invoice_lines", "invoice_id", "invoices"),
    ("invoice_lines", "plan_id", "plans"),
    ("payments", "invoice_id", "invoices"),
)
POLICY = (
    "tenant_id = current_setting('billing.tenant_id', true)"
    " OR current_setting('billing.all_tenants', true) = 'on'"
)


def upgrade() -> None:
    for table in TENANT_TABLES:
        op.add_column(table, sa.Column("tenant_id", sa.String(length=64), server_default="default"))
        op.alter_column(table, "tenant_id", server_default=None, nullable=False)
    for table in REFERENCED_TABLES:
        op.create_unique_constraint(op.f(f"uq_{table}_tenant_id_id"), table, ["tenant_id", "id"])
    for table, column, referenced in REFERENCES:
        op.drop_constraint(op.f(f"fk_{table}_{column}_{referenced}"), table, type_="foreignkey")
        op.create_foreign_key(
            op.f(f"fk_{table}_tenant_id_{referenced}"),
            table,
            referenced,
            ["tenant_id", column],
            ["tenant_id", "id"],
        )
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} USING ({POLICY}) WITH CHECK ({POLICY})"
        )


def downgrade() -> None:
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for table, column, referenced in REFERENCES:
        op.drop_constraint(op.f(f"fk_{table}_tenant_id_{referenced}"), table, type_="foreignkey")
        op.create_foreign_key(
            op.f(f"fk_{table}_{column}_{referenced}"), table, referenced, [column], ["id"]
        )
    for table in REFERENCED_TABLES:
        op.drop_constraint(op.f(f"uq_{table}_tenant_id_id"), table, type_="unique")
    for table in TENANT_TABLES:
        op.drop_column(table, "tenant_id")
