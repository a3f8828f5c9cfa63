"""Per-tenant, gap-free invoice numbers given at finalisation; finalised invoices do not change."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import Executable

from services.billing.ids import new_id
from services.billing.invoicing import LineItem, issue_invoice
from services.billing.models import (
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceLine,
)

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def customer_of(db: Session, tenant: str) -> Customer:
    customer = Customer(
        id=new_id(),
        tenant_id=tenant,
        email="numbers@example.com",
        name="Numbers",
        currency="USD",
        credit_balance=0,
    )
    db.add(customer)
    db.commit()
    return customer


def invoice_for(db: Session, customer: Customer, amount: int = 1000) -> Invoice:
    return issue_invoice(
        db,
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        subscription_id=None,
        kind=InvoiceKind.PRORATION,
        currency="USD",
        period_start=NOW,
        period_end=NOW + timedelta(days=30),
        lines=[LineItem("Setup", amount, None)],
        now=NOW,
    )


def numbers(db: Session, tenant: str) -> list[int | None]:
    db.expire_all()
    return list(
        db.scalars(
            select(Invoice.number).where(Invoice.tenant_id == tenant).order_by(Invoice.number)
        )
    )


def test_each_tenant_numbers_its_invoices_from_one(db: Session) -> None:
    first, second = customer_of(db, "tenant-a"), customer_of(db, "tenant-b")
    for customer in (first, second, first, first, second):
        invoice_for(db, customer)
        db.commit()
    assert numbers(db, "tenant-a") == [1, 2, 3]
    assert numbers(db, "tenant-b") == [1, 2]


def test_a_rolled_back_invoice_leaves_no_gap(db: Session) -> None:
    customer = customer_of(db, "tenant-a")
    invoice_for(db, customer)
    db.commit()
    invoice_for(db, customer)
    db.rollback()
    invoice_for(db, customer)
    db.commit()
    assert numbers(db, "tenant-a") == [1, 2]


def test_concurrent_issuers_share_one_gap_free_sequence(
    db: Session, sessions: sessionmaker[Session]
) -> None:
    customers = [customer_of(db, "tenant-a") for _ in range(4)]
    errors: list[BaseException] = []

    def issue(customer: Customer) -> None:
        try:
            for _ in range(10):
                with sessions() as session:
                    invoice_for(session, customer)
                    session.commit()
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=issue, args=(customer,)) for customer in customers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert numbers(db, "tenant-a") == list(range(1, 41))


def test_a_finalised_invoice_keeps_its_amounts_and_lines(db: Session) -> None:
    invoice = invoice_for(db, customer_of(db, "tenant-a"))
    db.commit()
    assert invoice.number == 1
    refused: list[Executable] = [
        update(Invoice).where(Invoice.id == invoice.id).values(amount_due=1),
        update(Invoice).where(Invoice.id == invoice.id).values(number=7),
        update(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id).values(amount=1),
        text("DELETE FROM invoice_lines WHERE invoice_id = :id").bindparams(id=invoice.id),
        text("DELETE FROM invoices WHERE id = :id").bindparams(id=invoice.id),
    ]
    for statement in refused:
        with pytest.raises(DBAPIError, match="final"):
            db.execute(statement)
        db.rollback()
    db.add(
        InvoiceLine(
            id=new_id(),
            tenant_id="tenant-a",
            invoice_id=invoice.id,
            description="Sneaked in",
            amount=5,
            plan_id=None,
            period_start=NOW,
            period_end=NOW,
        )
    )
    with pytest.raises(DBAPIError, match="final"):
        db.commit()
    db.rollback()
    # Its collection state still moves.
    db.execute(update(Invoice).where(Invoice.id == invoice.id).values(status="void", voided_at=NOW))
    db.commit()
    assert db.get_one(Invoice, invoice.id).amount_due == 1000
