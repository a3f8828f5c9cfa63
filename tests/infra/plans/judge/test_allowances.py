"""Reviewed replacements: environments/<env>/allow-replace.toml lets the guard pass a named
replacement with a reason until its expiry date; an expired or malformed entry fails."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

import infra.plans.judge.allowances
from infra.cli import main
from infra.plans.judge import guard
from infra.plans.judge.allowances import load_allowances
from infra.plans.produce.offline import render
from infra.plans.read.diff import diff_plans
from infra.plans.read.model import Plan, plan_from_dict
from infra.settings import Cloud, SettingsError, environment
from tests.infra.plans.conftest import preview_against_ref

RDS = "aws:rds/instance:Instance"
TODAY = dt.datetime.now(dt.UTC).date()


@pytest.fixture(scope="module")
def production() -> Plan:
    return render(environment("production"), Cloud.AWS)


def _renamed(plan: Plan) -> Plan:
    """The same stack with the database under another identifier: what the code had before."""
    data: dict[str, Any] = json.loads(plan.to_json())
    database = next(r for r in data["resources"] if r["type"] == RDS)
    database["inputs"]["identifier"] = "old-name"
    return plan_from_dict(data, "edited")


def _write(root: Path, text: str) -> Path:
    path = root / "production" / "allow-replace.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _entry(urn: str, expires: dt.date, reason: str = "INC-7: rename the database") -> str:
    return f'[[allow]]\nurn = "{urn}"\nreason = "{reason}"\nexpires = {expires.isoformat()}\n'


def test_reviewed_entry_lets_the_replacement_through_until_it_expires(
    production: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urn = production.of_type(RDS)[0].urn
    monkeypatch.setattr(infra.plans.judge.allowances, "ENVIRONMENTS_DIR", tmp_path)
    # The ref's render stands in for a git worktree render: the database had another identifier.
    before = _renamed(production)
    argv = preview_against_ref(monkeypatch, before, tmp_path / "out")

    assert main(argv) == 1  # no allowance: the guard blocks the replacement

    _write(tmp_path, _entry(urn, TODAY + dt.timedelta(days=3)))
    assert main(argv) == 0
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Destructive-change guard: pass" in report
    assert f"`{urn}` (identifier): INC-7: rename the database" in report

    _write(tmp_path, _entry(urn, TODAY - dt.timedelta(days=1)))
    assert main(argv) == 1
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Destructive-change guard: FAIL" in report
    assert "Expired entries in allow-replace.toml" in report
    assert f"`{urn}` expired {TODAY - dt.timedelta(days=1)}" in report


def test_the_expiry_day_still_allows(production: Plan) -> None:
    urn = production.of_type(RDS)[0].urn
    diff = diff_plans("production-aws", _renamed(production), production)
    entry = infra.plans.judge.allowances.Allowance("production", urn, "why", TODAY, "f")
    assert guard.guard([diff], reviewed=[entry], today=TODAY).ok
    late = guard.guard([diff], reviewed=[entry], today=TODAY + dt.timedelta(days=1))
    assert not late.ok
    assert late.expired == [entry]
    assert [c.urn for _, c in late.blocked] == [urn]  # an expired entry allows nothing


def test_an_expired_entry_fails_even_without_a_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(infra.plans.judge.allowances, "ENVIRONMENTS_DIR", tmp_path)
    _write(tmp_path, _entry("urn:pulumi:production::billing-aws::x::y", TODAY - dt.timedelta(1)))
    out = tmp_path / "out"
    assert (
        main(["preview", "--offline", "--env", "production", "--cloud", "gcp", "--out", str(out)])
        == 1
    )
    assert "Expired entries in allow-replace.toml" in (out / "report.md").read_text()


_URN_AND_REASON = '[[allow]]\nurn = "urn:pulumi:production::a::b::c"\nreason = "r"\n'


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (
            '[[allow]]\nurn = "urn:pulumi:production::a::b::c"\nexpires = 2030-01-01\n',
            "allow[0].reason",
            "missing",
        ),
        (
            '[[allow]]\nurn = "urn:pulumi:staging::a::b::c"\nreason = "r"\nexpires = 2030-01-01\n',
            "allow[0].urn",
            "production stack",
        ),
        (
            '[[allow]]\nurn = "urn:pulumi:production::a::b::c"\nreason = "r"\nexpires = "soon"\n',
            "allow[0].expires",
            "a date",
        ),
        (
            (
                '[[allow]]\nurn = "urn:pulumi:production::a::b::c"\nreason = "r"\n'
                'expires = 2030-01-01\nowner = "me"\n'
            ),
            "allow[0].owner",
            "unknown key",
        ),
        (
            f"{_URN_AND_REASON}expires = 2030-01-01T00:00:00Z\n",
            "allow[0].expires",
            "a date, for example 2026-12-31",
        ),
        (
            f"{_URN_AND_REASON}expires = 2030-01-01\n" * 2,
            "allow[1].urn",
            "listed twice",
        ),
        ("allow = 3\n", "allow", "valid list"),
        ("[[allow]\n", None, "invalid TOML"),
        (
            (
                '[[allow]]\nurn = "urn:pulumi:production::a::b::c"\n'
                'reason = " "\nexpires = 2030-01-01\n'
            ),
            "allow[0].reason",
            "say why",
        ),
        ("allowed = []\n", "allowed", "unknown key"),
    ],
)
def test_malformed_entries_name_the_file_and_key(
    tmp_path: Path, text: str, key: str | None, message: str
) -> None:
    _write(tmp_path, text)
    with pytest.raises(SettingsError, match=message) as caught:
        load_allowances("production", tmp_path)
    if key is not None:
        assert f"key '{key}'" in str(caught.value)
    assert "allow-replace.toml" in str(caught.value)


def test_cli_reports_a_malformed_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(infra.plans.judge.allowances, "ENVIRONMENTS_DIR", tmp_path)
    _write(tmp_path, "[[allow]]\nurn = 3\n")
    out = tmp_path / "out"
    assert (
        main(["preview", "--offline", "--env", "production", "--cloud", "gcp", "--out", str(out)])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "allow-replace.toml" in err[0]
    assert "allow[0]" in err[0]
    assert not (out / "report.md").exists()  # nothing half-written
