"""Billing periods and proration, in whole microseconds and integer minor units."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from enum import StrEnum


class BillingInterval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


_FIXED_LENGTH = {BillingInterval.DAY: timedelta(days=1), BillingInterval.WEEK: timedelta(weeks=1)}
_MONTHS = {BillingInterval.MONTH: 1, BillingInterval.YEAR: 12}


def in_utc(moment: datetime) -> datetime:
    """The same instant in UTC: periods are counted on the UTC calendar, whatever time zone a
    database session or a caller used (a New York session would otherwise move month ends and
    shift an hour at DST). A naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """Same day of month `months` later, clamped to the month's last day (Jan 31 -> Feb 28)."""
    moment = in_utc(moment)
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def boundary(anchor: datetime, interval: BillingInterval, count: int) -> datetime:
    """The end of the count-th period after the anchor."""
    anchor = in_utc(anchor)
    if interval in _MONTHS:
        return add_months(anchor, count * _MONTHS[interval])
    return anchor + count * _FIXED_LENGTH[interval]


def next_period_end(anchor: datetime, interval: BillingInterval, after: datetime) -> datetime:
    """The first period boundary strictly after `after`.

    Counting from the anchor rather than adding a month to the last end keeps a subscription
    started on the 31st billing on the 31st after a short month, instead of drifting to the 28th.
    """
    anchor, after = in_utc(anchor), in_utc(after)
    if interval in _MONTHS:
        step = _MONTHS[interval]
        count = max(1, ((after.year - anchor.year) * 12 + after.month - anchor.month) // step)
    else:
        count = max(1, (after - anchor) // _FIXED_LENGTH[interval])
    # The estimate is at most one period short of the answer (or already past it).
    while count > 1 and boundary(anchor, interval, count - 1) > after:
        count -= 1
    while boundary(anchor, interval, count) <= after:
        count += 1
    return boundary(anchor, interval, count)


def prorate(amount: int, remaining: timedelta, period: timedelta) -> int:
    """The share of `amount` for the remaining part of a period, rounded down to a minor unit."""
    if period <= timedelta(0):
        raise ValueError("a billing period must have a positive length")
    remaining = min(max(remaining, timedelta(0)), period)
    return amount * _microseconds(remaining) // _microseconds(period)


def _microseconds(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * 1_000_000 + span.microseconds
