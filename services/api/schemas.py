"""Request and response bodies. Money is an integer count of the currency's minor unit."""

import uuid
from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    field_validator,
)

from services.billing.collection import CollectionOutcome
from services.billing.currencies import ISO_4217, currency
from services.billing.models import InvoiceKind, InvoiceStatus, PaymentStatus, SubscriptionStatus
from services.billing.periods import BillingInterval


def _whole_number(value: object) -> object:
    """JSON integers: 3 and 3.0 alike (JSON Schema counts both as integers), never "3" or true."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


# The bounds come before the validator, so the document shows them as minimum and maximum.
WholeNumber = BeforeValidator(_whole_number)
# 10^12 minor units: a trillion cents is beyond any subscription price and far inside BIGINT.
MAX_AMOUNT = 10**12
# Control characters (C0, DEL, C1) are refused in every text field with a 422: PostgreSQL
# cannot store NUL in text at all, and the others only ever forge log lines or hide text.
_PLAIN = r"\x00-\x1f\x7f-\x9f"
Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=320,
        pattern=rf"^[^@\s{_PLAIN}]+@[^@\s{_PLAIN}]+\.[^@\s{_PLAIN}]+$",
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=rf"^[^{_PLAIN}]+$")]
PaymentMethodToken = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,255}$")]


class Request(BaseModel):
    # Unknown fields are mistakes (a misspelt "ammount" must not silently mean 0).
    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorDetail(BaseModel):
    code: str = Field(examples=["subscription_not_found"])
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    data: list[Item]
    has_more: bool
    # Pass as `cursor` to get the next page; null on the last page.
    next_cursor: uuid.UUID | None


class CustomerCreate(Request):
    email: Email
    name: Name
    payment_method: PaymentMethodToken | None = None


class CustomerUpdate(Request):
    email: Email | None = None
    name: Name | None = None
    payment_method: PaymentMethodToken | None = None


class Customer(Response):
    id: uuid.UUID
    email: str
    name: str
    payment_method: str | None
    currency: str | None
    credit_balance: int
    created_at: datetime


def _increments() -> list[JsonValue]:
    """JSON Schema for the amounts each currency can be charged in: multiples of its increment."""
    by_increment: dict[int, list[JsonValue]] = {}
    for code in sorted(ISO_4217):
        by_increment.setdefault(currency(code).increment, []).append(code)
    return [
        {
            "if": {"properties": {"currency": {"enum": codes}}},
            "then": {"properties": {"amount": {"multipleOf": increment}}},
        }
        for increment, codes in sorted(by_increment.items())
        if increment > 1
    ]


class PlanCreate(Request):
    # Amounts a currency cannot be charged in (a three-decimal currency's must end in 0) are
    # refused with 422 amount_not_chargeable; the document says so with if/then (JSON Schema
    # 2020-12, which OpenAPI 3.1 uses).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": _increments()})

    name: Name
    amount: Annotated[int, Field(ge=0, le=MAX_AMOUNT), WholeNumber]
    # The enum puts the accepted codes in the document; the validator enforces them.
    currency: Annotated[
        str, Field(min_length=3, max_length=3, json_schema_extra={"enum": sorted(ISO_4217)})
    ]
    interval: BillingInterval
    trial_days: Annotated[int, Field(ge=0, le=730), WholeNumber] = 0

    @field_validator("currency")
    @classmethod
    def _iso_currency(cls, currency: str) -> str:
        if currency not in ISO_4217:
            raise ValueError(f"{currency!r} is not an ISO 4217 currency code (uppercase)")
        return currency


class Plan(Response):
    id: uuid.UUID
    name: str
    amount: int
    currency: str
    interval: BillingInterval
    trial_days: int
    created_at: datetime


class SubscriptionCreate(Request):
    customer_id: uuid.UUID
    plan_id: uuid.UUID


class PlanChange(Request):
    plan_id: uuid.UUID


class Cancellation(Request):
    # False cancels now and voids what is still open; nothing is refunded.
    at_period_end: StrictBool = True


class Subscription(Response):
    id: uuid.UUID
    customer_id: uuid.UUID
    plan_id: uuid.UUID
    status: SubscriptionStatus
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    cancellation_reason: str | None
    canceled_at: datetime | None
    paused_at: datetime | None
    created_at: datetime


class InvoiceLine(Response):
    description: str
    amount: int
    plan_id: uuid.UUID | None
    period_start: datetime
    period_end: datetime


class Invoice(Response):
    id: uuid.UUID
    # The tenant's sequential invoice number, given when the invoice was issued.
    number: int | None
    customer_id: uuid.UUID
    subscription_id: uuid.UUID | None
    kind: InvoiceKind
    status: InvoiceStatus
    currency: str
    period_start: datetime
    period_end: datetime
    subtotal: int
    credit_applied: int
    amount_due: int
    # Below the currency's minimum charge: not charged, added to the next invoice.
    carried_forward: int
    attempt_count: int
    next_attempt_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    created_at: datetime
    lines: list[InvoiceLine]


class PlanChangeResult(BaseModel):
    subscription: Subscription
    # The proration invoice; null during a trial, or between two free plans.
    invoice: Invoice | None


class PaymentAttempt(BaseModel):
    invoice: Invoice
    outcome: CollectionOutcome


class Payment(Response):
    id: uuid.UUID
    invoice_id: uuid.UUID
    attempt_number: int
    amount: int
    currency: str
    status: PaymentStatus
    gateway: str
    gateway_reference: str | None
    failure_code: str | None
    failure_message: str | None
    created_at: datetime


class WebhookReceipt(BaseModel):
    received: bool
    duplicate: bool
