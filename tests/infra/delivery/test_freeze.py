"""Change freezes: dated and weekly windows, break-glass, and `up` refusing a frozen environment."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import pytest

from infra import cli
from infra.delivery.freeze import FreezeError, active_freeze, check_freeze
from infra.settings import (
    EnvironmentSettings,
    FreezeWindow,
    Weekday,
    WeeklyFreeze,
    load_environment,
)

UTC = dt.UTC


@pytest.fixture(scope="module")
def production() -> EnvironmentSettings:
    env = load_environment("production")
    return env.model_copy(
        update={
            "freeze": [
                FreezeWindow(
                    start=dt.datetime(2026, 12, 20, tzinfo=UTC),
                    end=dt.datetime(2027, 1, 4, tzinfo=UTC),
                    reason="end-of-year billing run",
                )
            ],
            "freeze_weekly": [
                WeeklyFreeze(
                    days=[Weekday.FRI], start="15:00", end="23:59", reason="no Friday deploys"
                )
            ],
        }
    )


@pytest.mark.parametrize(
    ("moment", "reason"),
    [
        (dt.datetime(2026, 12, 20, 0, 0, tzinfo=UTC), "end-of-year billing run"),
        (dt.datetime(2027, 1, 3, 23, 59, tzinfo=UTC), "end-of-year billing run"),
        (dt.datetime(2027, 1, 4, 0, 0, tzinfo=UTC), None),  # the end is outside the window
        (dt.datetime(2026, 12, 19, 23, 59, tzinfo=UTC), None),
        (dt.datetime(2026, 11, 27, 15, 0, tzinfo=UTC), "no Friday deploys"),  # a Friday
        (dt.datetime(2026, 11, 27, 23, 59, 30, tzinfo=UTC), "no Friday deploys"),
        (dt.datetime(2026, 11, 27, 14, 59, tzinfo=UTC), None),
        (dt.datetime(2026, 11, 26, 16, 0, tzinfo=UTC), None),  # a Thursday
        # 10:00 in UTC-06:00 is 16:00 UTC on a Friday.
        (
            dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-6))),
            "no Friday deploys",
        ),
    ],
)
def test_windows(production: EnvironmentSettings, moment: dt.datetime, reason: str | None) -> None:
    freeze = active_freeze(production, moment)
    assert (freeze.reason if freeze else None) == reason


def test_break_glass_overrides_and_is_recorded(production: EnvironmentSettings) -> None:
    frozen = dt.datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
    with pytest.raises(FreezeError, match=r"refusing to deploy production: production is in a"):
        check_freeze(production, frozen, None, "deploy production")
    with pytest.raises(FreezeError, match="--break-glass REASON"):
        check_freeze(production, frozen, "   ", "deploy production")
    note = check_freeze(production, frozen, "INC-7 ledger fix", "deploy production")
    assert note is not None
    assert note.startswith("Break-glass: INC-7 ledger fix (overrides: production is in a change")
    assert check_freeze(production, dt.datetime(2027, 2, 1, tzinfo=UTC), None, "deploy") is None


def test_naive_time_is_refused(production: EnvironmentSettings) -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        active_freeze(production, dt.datetime(2026, 12, 24))  # noqa: DTZ001


def test_freeze_windows_load_from_settings(environments_copy: Path) -> None:
    settings = environments_copy / "staging" / "settings.toml"
    settings.write_text(
        settings.read_text()
        + """
[[freeze]]
start = 2026-12-20T00:00:00Z
end = 2027-01-04T00:00:00Z
reason = "end-of-year billing run"

[[freeze_weekly]]
days = ["fri"]
start = "15:00"
end = "23:59"
reason = "no Friday deploys"
"""
    )
    env = load_environment("staging", environments_copy)
    freeze = active_freeze(env, dt.datetime(2026, 12, 25, tzinfo=UTC))
    assert freeze is not None
    assert freeze.window == "2026-12-20T00:00:00+00:00 to 2027-01-04T00:00:00+00:00"


def _up_args(break_glass: str | None) -> list[str]:
    args = ["up", "--env", "production"]
    return [*args, "--break-glass", break_glass] if break_glass else args


def test_up_refuses_a_frozen_environment(
    production: EnvironmentSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    def frozen_stacks(*_args: object) -> list[tuple[EnvironmentSettings, object]]:
        return [(production, c) for c in production.clouds]

    deployed: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "select_stacks", frozen_stacks)
    monkeypatch.setattr(
        "infra.delivery.freeze.utc_now", lambda: dt.datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
    )

    # No Pulumi CLI here: past the freeze check `up` stops at the CLI check, deploying nothing.
    def no_pulumi() -> None:
        deployed.append(argparse.Namespace())

    monkeypatch.setattr(cli, "pulumi_cli", no_pulumi)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))

    assert cli.main(_up_args(None)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to deploy production: production is in a change freeze")
    assert "--break-glass REASON" in err
    assert deployed == []  # refused before anything else ran
    assert not summary.exists()

    assert cli.main(_up_args("INC-7 ledger fix")) == 1  # reaches the CLI check
    assert len(deployed) == 1
    assert "Break-glass: INC-7 ledger fix" in capsys.readouterr().out
    assert "production: Break-glass: INC-7 ledger fix" in summary.read_text()
