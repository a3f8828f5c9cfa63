"""Period arithmetic and proration: calendar-correct, integer-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.billing.ids import new_id
from services.billing.periods import BillingInterval, add_months, next_period_end, prorate


def at(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, 9, 30, tzinfo=UTC)


def test_add_months_clamps_to_the_last_day() -> None:
    assert add_months(at(2025, 1, 31), 1) == at(2025, 2, 28)
    assert add_months(at(2024, 1, 31), 1) == at(2024, 2, 29)
    assert add_months(at(2025, 11, 30), 3) == at(2026, 2, 28)
    assert add_months(at(2024, 2, 29), 12) == at(2025, 2, 28)


@pytest.mark.parametrize(
    ("interval", "after", "expected"),
    [
        (BillingInterval.MONTH, at(2025, 1, 31), at(2025, 2, 28)),
        (BillingInterval.MONTH, at(2025, 2, 28), at(2025, 3, 31)),
        (BillingInterval.MONTH, at(2025, 3, 31), at(2025, 4, 30)),
        (BillingInterval.YEAR, at(2025, 1, 31), at(2026, 1, 31)),
        (BillingInterval.WEEK, at(2025, 1, 31), at(2025, 2, 7)),
        (BillingInterval.DAY, at(2025, 1, 31), at(2025, 2, 1)),
        # Long overdue: the next boundary after `after`, not one period after the anchor.
        (BillingInterval.MONTH, at(2025, 6, 15), at(2025, 6, 30)),
    ],
)
def test_next_period_end_counts_from_the_anchor(
    interval: BillingInterval, after: datetime, expected: datetime
) -> None:
    assert next_period_end(at(2025, 1, 31), interval, after) == expected


def test_next_period_end_is_strictly_after() -> None:
    anchor = at(2025, 1, 1)
    for days in range(0, 400, 7):
        moment = anchor + timedelta(days=days)
        end = next_period_end(anchor, BillingInterval.MONTH, moment)
        assert moment < end <= add_months(moment, 1)


def test_prorate_is_integer_and_rounds_down() -> None:
    day = timedelta(days=1)
    assert prorate(3000, 15 * day, 30 * day) == 1500
    assert prorate(1000, 1 * day, 3 * day) == 333
    assert prorate(1000, -day, 30 * day) == 0
    assert prorate(1000, 40 * day, 30 * day) == 1000
    assert isinstance(prorate(999, timedelta(seconds=1), 30 * day), int)
    with pytest.raises(ValueError, match="positive length"):
        prorate(1000, day, timedelta(0))


def test_ids_sort_by_creation() -> None:
    ids = [new_id() for _ in range(50)]
    assert [identifier.version for identifier in ids] == [7] * 50
    assert len(set(ids)) == 50
    # Same millisecond ids may tie on time; across milliseconds they sort.
    assert ids[0].int >> 80 <= ids[-1].int >> 80
