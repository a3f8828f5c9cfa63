"""Plans: a price in minor units and an ISO currency per billing interval.

Plans never change once created; a new price is a new plan, so invoices and proration always
refer to the price that was in force.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.billing.currencies import currency as currency_rules
from services.billing.errors import BillingError, NotFoundError
from services.billing.ids import new_id
from services.billing.models import Plan

if TYPE_CHECKING:
    import uuid

    from sqlalchemy.orm import Session

    from services.billing.periods import BillingInterval


def create_plan(
    session: Session,
    *,
    name: str,
    amount: int,
    currency: str,
    interval: BillingInterval,
    trial_days: int,
) -> Plan:
    rules = currency_rules(currency)
    if not rules.representable(amount):
        raise BillingError(
            "amount_not_chargeable",
            f"amount: {currency} is charged in multiples of {rules.increment} minor units; "
            f"{amount} is not one",
            status=422,
        )
    plan = Plan(
        id=new_id(),
        name=name,
        amount=amount,
        currency=currency,
        interval=interval,
        trial_days=trial_days,
    )
    session.add(plan)
    session.flush()
    return plan


def get_plan(session: Session, plan_id: uuid.UUID) -> Plan:
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise NotFoundError("plan", plan_id)
    return plan
