"""The billing rules services/README.md states: proration, credit, resume, currencies, UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from services.billing import catalog, invoices, subscriptions
from services.billing.config import Settings
from services.billing.currencies import currency
from services.billing.db import create_database_engine
from services.billing.errors import BillingError
from services.billing.gateway import SimulatorGateway
from services.billing.ids import new_id
from services.billing.invoicing import CARRIED_LINE, renew_due_subscriptions
from services.billing.models import (
    Customer,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from services.billing.periods import BillingInterval, next_period_end
from services.tests.factories import SEEDED_TENANT

MONTH, YEAR = BillingInterval.MONTH, BillingInterval.YEAR


def noon(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


def new_customer(db: Session, *, currency_code: str = "USD") -> Customer:
    customer = Customer(
        id=new_id(),
        tenant_id=SEEDED_TENANT,
        email="rules@example.com",
        name="Rules",
        payment_method="pm_card_visa",
        gateway_customer_id="cus_rules",
        currency=currency_code,
        credit_balance=0,
    )
    db.add(customer)
    db.flush()
    return customer


def new_plan(
    db: Session, amount: int, interval: BillingInterval, *, currency_code: str = "USD"
) -> Plan:
    plan = Plan(
        id=new_id(),
        tenant_id=SEEDED_TENANT,
        name=f"{interval.value} {amount}",
        amount=amount,
        currency=currency_code,
        interval=interval,
        trial_days=0,
    )
    db.add(plan)
    db.flush()
    return plan


def paid_subscription(
    db: Session, simulator: SimulatorGateway, plan: Plan, *, at: datetime
) -> Subscription:
    """Subscribed at `at`, first invoice paid."""
    customer = new_customer(db, currency_code=plan.currency)
    subscription = subscriptions.start_subscription(
        db, customer_id=customer.id, plan_id=plan.id, now=at
    )
    db.commit()
    [first] = invoices_of(db, subscription)
    _, outcome = invoices.pay_invoice(db, simulator, first.id, now=at)
    assert outcome.value == "paid"
    return subscription


def invoices_of(db: Session, subscription: Subscription) -> list[Invoice]:
    db.expire_all()
    return list(
        db.scalars(
            select(Invoice)
            .where(Invoice.subscription_id == subscription.id)
            .order_by(Invoice.created_at, Invoice.period_start)
        )
    )


def lines(invoice: Invoice) -> list[int]:
    return [line.amount for line in invoice.lines]


def change(db: Session, subscription: Subscription, plan: Plan, *, at: datetime) -> Invoice | None:
    changed, invoice = subscriptions.change_plan(db, subscription.id, plan_id=plan.id, now=at)
    db.commit()
    del changed
    return invoice


def credit_of(db: Session, subscription: Subscription) -> int:
    db.expire_all()
    return db.get_one(Customer, subscription.customer_id).credit_balance


# Item 2: proration across intervals. Stripe's rule: the anchor resets to the change and the
# invoice charges the new plan's whole period minus the unused share of the old one
# (https://docs.stripe.com/billing/subscriptions/billing-cycle#changing).


def test_monthly_to_yearly_from_a_month_end_anchor_resets_the_anchor_and_bills_a_year(
    db: Session, simulator: SimulatorGateway
) -> None:
    monthly, yearly = new_plan(db, 3000, MONTH), new_plan(db, 36500, YEAR)
    subscription = paid_subscription(db, simulator, monthly, at=noon(2025, 1, 31))
    # Jan 31 -> Feb 28 is 28 days; 14 of them are left.
    invoice = change(db, subscription, yearly, at=noon(2025, 2, 14))
    assert invoice is not None
    assert lines(invoice) == [-1500, 36500]
    assert (invoice.amount_due, invoice.status) == (35000, InvoiceStatus.OPEN)
    assert (invoice.period_start, invoice.period_end) == (noon(2025, 2, 14), noon(2026, 2, 14))
    db.expire_all()
    changed = db.get_one(Subscription, subscription.id)
    assert changed.billing_anchor == changed.current_period_start == noon(2025, 2, 14)
    assert changed.current_period_end == noon(2026, 2, 14)
    # The next renewal bills the yearly price for the year after.
    renew_due_subscriptions(db, now=noon(2026, 2, 14), batch_size=10)
    db.commit()
    renewal = invoices_of(db, subscription)[-1]
    assert (renewal.kind, lines(renewal)) == (InvoiceKind.CYCLE, [36500])
    assert (renewal.period_start, renewal.period_end) == (noon(2026, 2, 14), noon(2027, 2, 14))


def test_yearly_to_monthly_in_a_leap_year_credits_the_unused_year(
    db: Session, simulator: SimulatorGateway
) -> None:
    yearly, monthly = new_plan(db, 36500, YEAR), new_plan(db, 2000, MONTH)
    # Feb 29 2024 -> Feb 28 2025: 365 days at 100 a day.
    subscription = paid_subscription(db, simulator, yearly, at=noon(2024, 2, 29))
    assert subscription.current_period_end == noon(2025, 2, 28)
    # 60 days left: Dec 30 -> Jan 30 -> Feb 28.
    invoice = change(db, subscription, monthly, at=noon(2024, 12, 30))
    assert invoice is not None
    assert lines(invoice) == [-6000, 2000]
    assert (invoice.amount_due, invoice.status) == (0, InvoiceStatus.PAID)
    assert credit_of(db, subscription) == 4000
    db.expire_all()
    changed = db.get_one(Subscription, subscription.id)
    assert changed.current_period_end == noon(2025, 1, 30)
    # Monthly from the 30th: the short month ends on its last day, then back to the 30th.
    ends = []
    for _ in range(2):
        renew_due_subscriptions(db, now=changed.current_period_end, batch_size=10)
        db.commit()
        db.expire_all()
        changed = db.get_one(Subscription, subscription.id)
        ends.append(changed.current_period_end)
    assert ends == [noon(2025, 2, 28), noon(2025, 3, 30)]
    # The credit paid both renewals.
    assert [inv.amount_due for inv in invoices_of(db, subscription)[-2:]] == [0, 0]
    assert credit_of(db, subscription) == 0


def test_monthly_to_yearly_on_february_29_counts_the_year_from_the_leap_day(
    db: Session, simulator: SimulatorGateway
) -> None:
    monthly, yearly = new_plan(db, 2900, MONTH), new_plan(db, 12000, YEAR)
    # Feb 1 -> Mar 1 2024 is 29 days at 100 a day; one is left on the 29th.
    subscription = paid_subscription(db, simulator, monthly, at=noon(2024, 2, 1))
    invoice = change(db, subscription, yearly, at=noon(2024, 2, 29))
    assert invoice is not None
    assert lines(invoice) == [-100, 12000]
    assert invoice.period_end == noon(2025, 2, 28)
    anchor = noon(2024, 2, 29)
    assert next_period_end(anchor, YEAR, noon(2025, 2, 28)) == noon(2026, 2, 28)
    assert next_period_end(anchor, YEAR, noon(2027, 2, 28)) == noon(2028, 2, 29)


def test_same_interval_change_prorates_over_the_current_period(
    db: Session, simulator: SimulatorGateway
) -> None:
    basic, pro = new_plan(db, 2800, MONTH), new_plan(db, 5600, MONTH)
    subscription = paid_subscription(db, simulator, basic, at=noon(2025, 2, 1))
    invoice = change(db, subscription, pro, at=noon(2025, 2, 8))
    assert invoice is not None
    # 21 of 28 days left.
    assert lines(invoice) == [-2100, 4200]
    db.expire_all()
    assert db.get_one(Subscription, subscription.id).current_period_end == noon(2025, 3, 1)


# Item 3: credit only for paid time.


def test_a_downgrade_before_the_first_payment_gives_no_credit_and_cancel_keeps_none(
    db: Session,
) -> None:
    pro, basic = new_plan(db, 4000, MONTH), new_plan(db, 1000, MONTH)
    customer = new_customer(db)
    subscription = subscriptions.start_subscription(
        db, customer_id=customer.id, plan_id=pro.id, now=noon(2025, 1, 31)
    )
    db.commit()
    [unpaid] = invoices_of(db, subscription)
    # Half the 28-day period left: nothing of Pro was paid, so nothing of it is credited.
    invoice = change(db, subscription, basic, at=noon(2025, 2, 14))
    assert invoice is not None
    assert lines(invoice) == [4000, -2000, 500]
    assert invoice.amount_due == 2500
    assert credit_of(db, subscription) == 0
    assert db.get_one(Invoice, unpaid.id).status is InvoiceStatus.VOID
    subscriptions.cancel(db, subscription.id, at_period_end=False, now=noon(2025, 2, 15))
    db.commit()
    assert credit_of(db, subscription) == 0
    assert {inv.status for inv in invoices_of(db, subscription)} == {InvoiceStatus.VOID}


def test_a_downgrade_after_paying_credits_the_unused_paid_time(
    db: Session, simulator: SimulatorGateway
) -> None:
    pro, basic = new_plan(db, 4000, MONTH), new_plan(db, 1000, MONTH)
    subscription = paid_subscription(db, simulator, pro, at=noon(2025, 1, 31))
    invoice = change(db, subscription, basic, at=noon(2025, 2, 14))
    assert invoice is not None
    assert lines(invoice) == [-2000, 500]
    assert credit_of(db, subscription) == 1500


# Item 11: resume after the period ended.


def test_resume_after_the_period_ended_honours_cancel_at_period_end(
    db: Session, simulator: SimulatorGateway
) -> None:
    subscription = paid_subscription(db, simulator, new_plan(db, 3000, MONTH), at=noon(2025, 1, 1))
    subscriptions.cancel(db, subscription.id, at_period_end=True, now=noon(2025, 1, 5))
    subscriptions.pause(db, subscription.id, now=noon(2025, 1, 6))
    db.commit()
    resumed = subscriptions.resume(db, subscription.id, now=noon(2025, 3, 1))
    db.commit()
    assert resumed.status is SubscriptionStatus.CANCELED
    assert resumed.canceled_at == noon(2025, 2, 1)
    assert resumed.cancellation_reason == "canceled_at_period_end"
    assert len(invoices_of(db, subscription)) == 1


# Item 12: currencies.


def test_the_currency_table() -> None:
    assert (currency("USD").exponent, currency("USD").minimum_charge) == (2, 50)
    assert (currency("JPY").exponent, currency("JPY").minimum_charge) == (0, 50)
    assert (currency("KWD").exponent, currency("KWD").increment) == (3, 10)
    assert (currency("ISK").exponent, currency("ISK").increment) == (2, 100)
    assert currency("GBP").minimum_charge == 30
    assert currency("KWD").round_down(9648) == 9640
    assert currency("KWD").round_down(-9648) == -9640
    with pytest.raises(KeyError):
        currency("XXX")


def test_an_amount_below_the_minimum_charge_is_carried_to_the_next_invoice(
    db: Session, simulator: SimulatorGateway
) -> None:
    small, bigger = new_plan(db, 2800, MONTH), new_plan(db, 2856, MONTH)
    subscription = paid_subscription(db, simulator, small, at=noon(2025, 2, 1))
    # 14 of 28 days left: -1400 + 1428 = 28, under USD's 50.
    invoice = change(db, subscription, bigger, at=noon(2025, 2, 15))
    assert invoice is not None
    assert (invoice.subtotal, invoice.amount_due, invoice.carried_forward) == (28, 0, 28)
    assert invoice.status is InvoiceStatus.PAID
    db.expire_all()
    assert db.get_one(Customer, subscription.customer_id).debit_balance == 28
    renew_due_subscriptions(db, now=noon(2025, 3, 1), batch_size=10)
    db.commit()
    renewal = invoices_of(db, subscription)[-1]
    assert sorted((line.description, line.amount) for line in renewal.lines) == [
        (CARRIED_LINE, 28),
        ("month 2856 (monthly)", 2856),
    ]
    assert renewal.amount_due == 2856 + 28
    assert db.get_one(Customer, subscription.customer_id).debit_balance == 0


def test_three_decimal_prorations_are_whole_tens(db: Session, simulator: SimulatorGateway) -> None:
    basic, pro = (
        new_plan(db, 10000, MONTH, currency_code="KWD"),
        new_plan(db, 20000, MONTH, currency_code="KWD"),
    )
    subscription = paid_subscription(db, simulator, basic, at=noon(2025, 2, 1))
    # 27 of 28 days left: 9642.8... and 19285.7... before rounding down to tens.
    invoice = change(db, subscription, pro, at=noon(2025, 2, 2))
    assert invoice is not None
    assert lines(invoice) == [-9640, 19280]


def test_a_plan_price_the_currency_cannot_charge_is_refused(db: Session) -> None:
    with pytest.raises(BillingError, match="multiples of 10") as refused:
        catalog.create_plan(
            db, name="Odd", amount=10005, currency="KWD", interval=MONTH, trial_days=0
        )
    assert (refused.value.code, refused.value.status) == ("amount_not_chargeable", 422)


# Item 10: UTC everywhere.


def test_every_connection_is_in_utc_whatever_the_database_default(
    engine: Engine, settings: Settings
) -> None:
    database = make_url(str(engine.url)).database
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.execute(text(f"ALTER DATABASE \"{database}\" SET timezone TO 'America/New_York'"))
    try:
        fresh = create_database_engine(settings.database, pool_size=1)
        with fresh.connect() as connection:
            assert connection.execute(text("SHOW timezone")).scalar_one() == "UTC"
            moment = connection.execute(
                text("SELECT timestamptz '2025-03-09 12:00+00'")
            ).scalar_one()
        fresh.dispose()
    finally:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
            admin.execute(text(f'ALTER DATABASE "{database}" RESET timezone'))
    assert moment.utcoffset() == timedelta(0)


def test_periods_count_on_the_utc_calendar_whatever_zone_the_times_are_in() -> None:
    new_york = ZoneInfo("America/New_York")
    # 03:00 UTC on Jan 31 is still Jan 30 in New York.
    anchor = datetime(2025, 1, 31, 3, tzinfo=UTC).astimezone(new_york)
    assert next_period_end(anchor, MONTH, anchor) == datetime(2025, 2, 28, 3, tzinfo=UTC)
    # Across the DST change (Mar 9 in New York) a month is still a UTC month.
    anchor = datetime(2025, 3, 1, 12, tzinfo=UTC).astimezone(new_york)
    assert next_period_end(anchor, MONTH, anchor) == datetime(2025, 4, 1, 12, tzinfo=UTC)
