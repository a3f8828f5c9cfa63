"""The billing ledger's tables. Money is BIGINT minor units (cents); never a float."""

import uuid
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.billing.ids import new_id
from services.billing.periods import BillingInterval


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    CANCELED = "canceled"


class InvoiceKind(StrEnum):
    # One per subscription and period; the unique index below holds the worker to that.
    CYCLE = "cycle"
    PRORATION = "proration"


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class PaymentStatus(StrEnum):
    """A payment's lifecycle; services.billing.collection moves it along.

    pending -> succeeded | failed: the gateway's answer (or a webhook, or reconciliation).
    pending -> refunding -> refunded: money arrived for an invoice already settled (paid by
    another attempt, or voided); it goes back to the customer.
    failed -> succeeded: a late success for an attempt recorded as failed, on an invoice still
    open (otherwise refunding).
    """

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDING = "refunding"
    REFUNDED = "refunded"


def _enum_column(enum: type[Enum], name: str) -> SqlEnum:
    # VARCHAR plus CHECK instead of a PostgreSQL ENUM type: adding a value is then a plain
    # constraint swap in a migration rather than ALTER TYPE, which cannot run in a transaction.
    return SqlEnum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


# Tenant ids are the `tenant` claim of the bearer token: short, plain, safe in logs and keys.
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class TenantOwned:
    """A row that belongs to one tenant (a merchant).

    Every table below carries tenant_id, and every reference between them includes it, so a
    row can only point at rows of its own tenant: the database refuses anything else. The API
    scopes each query to the caller's tenant, and row-level security (migration 0002) filters
    what a forgotten WHERE would otherwise show.
    """

    tenant_id: Mapped[str] = mapped_column(String(64))


def _tenant_key() -> UniqueConstraint:
    # The target of the composite foreign keys, and the index tenant-scoped listings use.
    return UniqueConstraint("tenant_id", "id")


def _tenant_reference(column: str, table: str, *, deferrable: bool = False) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["tenant_id", column],
        [f"{table}.tenant_id", f"{table}.id"],
        deferrable=deferrable or None,
        initially="IMMEDIATE" if deferrable else None,
    )


class Customer(TenantOwned, Base):
    __tablename__ = "customers"
    __table_args__ = (
        _tenant_key(),
        CheckConstraint("credit_balance >= 0", name="credit_balance_not_negative"),
        CheckConstraint("debit_balance >= 0", name="debit_balance_not_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200))
    # The gateway's token for the saved card (Stripe: pm_...), charged off-session.
    payment_method: Mapped[str | None] = mapped_column(String(255))
    gateway_customer_id: Mapped[str | None] = mapped_column(String(255))
    # Fixed by the first subscription: credit and invoices are in one currency per customer.
    currency: Mapped[str | None] = mapped_column(String(3))
    credit_balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Owed but below the gateway's minimum charge: added to the next invoice (Stripe does so).
    debit_balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Plan(TenantOwned, Base):
    __tablename__ = "plans"
    __table_args__ = (
        _tenant_key(),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
        CheckConstraint("trial_days BETWEEN 0 AND 730", name="trial_days_range"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    interval: Mapped[BillingInterval] = mapped_column(_enum_column(BillingInterval, "interval"))
    trial_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Subscription(TenantOwned, Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        _tenant_key(),
        _tenant_reference("customer_id", "customers"),
        _tenant_reference("plan_id", "plans"),
        CheckConstraint("current_period_end > current_period_start", name="period_has_length"),
        # The renewal scan: due subscriptions in the states that renew.
        Index(
            "ix_subscriptions_renewal_due",
            "current_period_end",
            "id",
            postgresql_where=text("status IN ('trialing', 'active', 'past_due')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    customer_id: Mapped[uuid.UUID] = mapped_column(index=True)
    plan_id: Mapped[uuid.UUID]
    status: Mapped[SubscriptionStatus] = mapped_column(
        _enum_column(SubscriptionStatus, "subscription_status")
    )
    # Period boundaries count from here, so month-end anchors do not drift.
    billing_anchor: Mapped[datetime]
    current_period_start: Mapped[datetime]
    current_period_end: Mapped[datetime]
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False, server_default="false")
    cancellation_reason: Mapped[str | None] = mapped_column(String(32))
    canceled_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Invoice(TenantOwned, Base):
    __tablename__ = "invoices"
    __table_args__ = (
        _tenant_key(),
        _tenant_reference("customer_id", "customers"),
        _tenant_reference("subscription_id", "subscriptions"),
        CheckConstraint("credit_applied >= 0", name="credit_applied_not_negative"),
        CheckConstraint("amount_due >= 0", name="amount_due_not_negative"),
        CheckConstraint("attempt_count >= 0", name="attempt_count_not_negative"),
        CheckConstraint("carried_forward >= 0", name="carried_forward_not_negative"),
        # The promise "never invoiced twice for a period", kept by the database itself.
        Index(
            "uq_invoices_cycle_period",
            "subscription_id",
            "period_start",
            unique=True,
            postgresql_where=text("kind = 'cycle'"),
        ),
        # The charge scan: open invoices whose next attempt is due.
        Index(
            "ix_invoices_collection_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'open'"),
        ),
        # Each tenant's invoices are numbered 1, 2, 3... (InvoiceNumberSequence). Partial, so
        # no lookup that does not name a number can use it: the foreign-key checks' (tenant_id,
        # id) lookups took it on young statistics and read the tenant's every invoice (0007).
        Index(
            "uq_invoices_tenant_id_number",
            "tenant_id",
            "number",
            unique=True,
            postgresql_where=text("number IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # The tenant's sequential, gap-free invoice number, given when the invoice is finalised
    # (issued). From then on the invoice's amounts, lines and period cannot change: a trigger
    # in the database refuses it (migration 0004); only its collection state moves.
    number: Mapped[int | None] = mapped_column(BigInteger)
    customer_id: Mapped[uuid.UUID] = mapped_column(index=True)
    subscription_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    kind: Mapped[InvoiceKind] = mapped_column(_enum_column(InvoiceKind, "invoice_kind"))
    status: Mapped[InvoiceStatus] = mapped_column(_enum_column(InvoiceStatus, "invoice_status"))
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    # Sum of the lines; negative when a downgrade's credit exceeds its charge.
    subtotal: Mapped[int] = mapped_column(BigInteger)
    credit_applied: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    amount_due: Mapped[int] = mapped_column(BigInteger)
    # An amount due below the currency's minimum charge, moved to the customer's debit balance.
    carried_forward: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    attempt_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    paid_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]

    # Loaded on access; API listings ask for them up front (selectinload), the worker never.
    lines: Mapped[list["InvoiceLine"]] = relationship(order_by="InvoiceLine.id")


class InvoiceLine(TenantOwned, Base):
    __tablename__ = "invoice_lines"
    __table_args__ = (
        # Deferrable (checked at once unless a transaction defers it): renewal writes a
        # batch's lines before their invoices, which are finalised as they are inserted.
        _tenant_reference("invoice_id", "invoices", deferrable=True),
        _tenant_reference("plan_id", "plans"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    invoice_id: Mapped[uuid.UUID] = mapped_column(index=True)
    description: Mapped[str] = mapped_column(String(300))
    # Negative for credits (unused time on the plan being left).
    amount: Mapped[int] = mapped_column(BigInteger)
    plan_id: Mapped[uuid.UUID | None]
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]


class Payment(TenantOwned, Base):
    __tablename__ = "payments"
    __table_args__ = (
        _tenant_reference("invoice_id", "invoices"),
        # One gateway call per attempt; a replayed attempt reuses its row and idempotency key.
        UniqueConstraint("invoice_id", "attempt_number"),
        UniqueConstraint("idempotency_key"),
        # An invoice is paid at most once.
        Index(
            "uq_payments_one_success_per_invoice",
            "invoice_id",
            unique=True,
            postgresql_where=text("status = 'succeeded'"),
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        # At most one attempt in flight per invoice: a second could charge the card twice.
        Index(
            "uq_payments_one_pending_per_invoice",
            "invoice_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
        # The reconciliation scan: payments whose outcome or refund is due to be checked.
        Index(
            "ix_payments_check_due",
            "next_check_at",
            "id",
            postgresql_where=text("status IN ('pending', 'refunding')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    invoice_id: Mapped[uuid.UUID]
    attempt_number: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[PaymentStatus] = mapped_column(_enum_column(PaymentStatus, "payment_status"))
    gateway: Mapped[str] = mapped_column(String(32))
    gateway_reference: Mapped[str | None] = mapped_column(String(255), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(Text)
    # While pending or refunding: when to ask the gateway again (a claim's lease, a retry after
    # an outage, or a check on a charge the gateway is still processing).
    next_check_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class InvoiceNumberSequence(Base):
    """The last invoice number each tenant has used.

    Taken with a row lock in the transaction that finalises the invoice, so numbers are
    gap-free: a transaction that rolls back gives its number back with it.
    """

    __tablename__ = "invoice_number_sequences"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger)


class WebhookEvent(Base):
    """Gateway events already handled; the gateway delivers at least once."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())


class IdempotencyKey(TenantOwned, Base):
    """A client's Idempotency-Key: claimed with the request's first statement, answered in the
    same transaction as the request's effect, so the two commit (or vanish) together."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # The purge of expired keys scans by age.
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    # Keys belong to a tenant, as Stripe's belong to an account.
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of method, path, query and body: the same key with another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    # When the running request claimed it; an unanswered claim this old may be taken over.
    claimed_at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
