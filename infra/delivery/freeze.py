"""Change freezes: dated and weekly windows (UTC) during which an environment takes no changes.

Windows live in ``environments/<env>/settings.toml`` as ``[[freeze]]`` (start, end, reason) and
``[[freeze_weekly]]`` (days, "HH:MM" start and end, reason). ``up`` and ``promote`` into a
frozen environment refuse unless given a break-glass reason, which is then recorded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from infra.errors import InfraError
from infra.settings import EnvironmentSettings, Weekday

# datetime.weekday() numbering: Monday is 0.
_WEEKDAYS = (
    Weekday.MON,
    Weekday.TUE,
    Weekday.WED,
    Weekday.THU,
    Weekday.FRI,
    Weekday.SAT,
    Weekday.SUN,
)


class FreezeError(InfraError):
    """A change into a frozen environment without a break-glass reason."""


@dataclass(frozen=True)
class ActiveFreeze:
    """The window that freezes an environment at a given moment."""

    environment: str
    window: str  # "2026-12-21T00:00:00+00:00 to 2027-01-04T00:00:00+00:00" or "fri 15:00-23:59"
    reason: str

    def describe(self) -> str:
        return f"{self.environment} is in a change freeze ({self.window} UTC: {self.reason})"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def active_freeze(env: EnvironmentSettings, now: dt.datetime) -> ActiveFreeze | None:
    """The first freeze window of ``env`` that contains ``now``, or None."""
    if now.tzinfo is None:
        raise ValueError("now must carry a UTC offset")
    now = now.astimezone(dt.UTC)
    for dated in env.freeze:
        if dated.start <= now < dated.end:
            start = dated.start.astimezone(dt.UTC).isoformat()
            end = dated.end.astimezone(dt.UTC).isoformat()
            return ActiveFreeze(env.name, f"{start} to {end}", dated.reason)
    day = _WEEKDAYS[now.weekday()]
    clock = now.strftime("%H:%M")
    for weekly in env.freeze_weekly:
        # The end minute is inside the window: "15:00"-"23:59" covers the rest of the day.
        if day in weekly.days and weekly.start <= clock <= weekly.end:
            window = f"{day.value} {weekly.start}-{weekly.end}"
            return ActiveFreeze(env.name, window, weekly.reason)
    return None


def check_freeze(
    env: EnvironmentSettings, now: dt.datetime, break_glass: str | None, action: str
) -> str | None:
    """Raise FreezeError if ``env`` is frozen at ``now`` and no reason is given.

    Returns the line to record when a break-glass reason overrides a freeze, else None.
    """
    freeze = active_freeze(env, now)
    if freeze is None:
        return None
    reason = (break_glass or "").strip()
    if not reason:
        raise FreezeError(
            f"refusing to {action}: {freeze.describe()}; "
            "pass --break-glass REASON to override (the reason is recorded)"
        )
    return f"Break-glass: {reason} (overrides: {freeze.describe()})"
