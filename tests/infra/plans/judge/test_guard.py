"""The destructive-change guard: replacing the production database fails until it is allowed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.cli import main
from infra.plans.judge import guard
from infra.plans.produce.offline import render
from infra.plans.read.diff import diff_plans
from infra.plans.read.model import Plan, PlanError, plan_from_dict
from infra.policy.checks import preview_verdicts
from infra.settings import Cloud, environment
from tests.infra.plans.conftest import preview_against_ref

RDS = "aws:rds/instance:Instance"


@pytest.fixture(scope="module")
def production() -> Plan:
    return render(environment("production"), Cloud.AWS)


def _edited(plan: Plan, edit: Any, environment_name: str | None = None) -> Plan:
    data = json.loads(plan.to_json())
    edit(data)
    if environment_name:
        data["environment"] = environment_name
    return plan_from_dict(data, "edited")


def _database(data: dict[str, Any]) -> dict[str, Any]:
    database: dict[str, Any] = next(r for r in data["resources"] if r["type"] == RDS)
    return database


def _urn(plan: Plan) -> str:
    return plan.of_type(RDS)[0].urn


def test_replacing_the_production_database_fails_then_passes_when_allowed(
    production: Plan,
) -> None:
    after = _edited(production, lambda d: _database(d)["inputs"].update(storageEncrypted=False))
    diff = diff_plans("production-aws", production, after)
    assert [c.op for c in diff.changes] == ["update"]  # the diff alone sees an update

    blocked = guard.guard([diff], source="`main`")
    assert not blocked.ok
    [(stack, change)] = blocked.blocked
    assert (stack, change.op, change.urn, change.keys) == (
        "production-aws",
        "replace",
        _urn(production),
        ["storageEncrypted"],
    )
    assert _urn(production) in guard.verdict(blocked).markdown

    allowed = guard.guard([diff], allow=[_urn(production)], source="`main`")
    assert allowed.ok
    assert [c.urn for _, c in allowed.allowed] == [_urn(production)]
    text = guard.verdict(allowed).markdown
    assert "Allowed by `--allow-replace`" in text
    assert _urn(production) in text


def test_deleting_the_database_fails_and_the_preview_fails_with_it(production: Plan) -> None:
    after = _edited(production, lambda d: d["resources"].remove(_database(d)))
    diff = diff_plans("production-aws", production, after)
    verdicts, failed = preview_verdicts([after], [diff], {"production-aws": production}, "main")
    assert failed
    titles = {v.title: v.ok for v in verdicts}
    assert titles == {"Policy": True, "Destructive-change guard": False, "Monthly cost": True}
    cost = next(v for v in verdicts if v.title == "Monthly cost").markdown
    assert "Change vs `main`" in cost
    assert "| production-aws | us-east-1 |" in cost
    assert "| -$" in cost  # a deleted database saves money

    _, allowed = preview_verdicts(
        [after], [diff], {"production-aws": production}, "main", allow=[_urn(production)]
    )
    assert not allowed


def test_dev_is_not_guarded_and_harmless_updates_pass(production: Plan) -> None:
    replaced = _edited(production, lambda d: _database(d)["inputs"].update(identifier="other"))
    assert guard.guard([diff_plans("dev-aws", production, replaced)]).ok
    retagged = _edited(
        production, lambda d: _database(d)["inputs"].update(instanceClass="db.r6g.2xlarge")
    )
    result = guard.guard([diff_plans("staging-aws", production, retagged)])
    assert result.ok
    assert result.checked == ["staging-aws"]


def _preview(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(steps), "changeSummary": {}}


def test_live_preview_steps_are_guarded(tmp_path: Path) -> None:
    urn = (
        "urn:pulumi:production::billing-gcp::billing:gcp:Database"
        "$gcp:sql/databaseInstance:DatabaseInstance::database-instance"
    )
    path = tmp_path / "preview.json"
    path.write_text(
        json.dumps(
            _preview(
                {"op": "same", "urn": urn.replace("database-instance", "x")},
                {
                    "op": "create-replacement",
                    "urn": urn,
                    "replaceReasons": ["name"],
                    "newState": {"urn": urn, "type": "gcp:sql/databaseInstance:DatabaseInstance"},
                },
                {"op": "delete-replaced", "urn": urn},
            )
        ),
        encoding="utf-8",
    )
    diff = guard.load_preview(path)
    assert diff.stack == "production-gcp"
    assert [c.op for c in diff.changes] == ["create-replacement", "delete-replaced"]
    assert diff.changes[0].keys == ["name"]
    result = guard.guard([diff])
    assert len(result.blocked) == 2
    assert guard.guard([diff], allow=[urn]).ok


def test_malformed_preview_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "preview.json"
    path.write_text(json.dumps({"steps": [{"op": "delete"}]}), encoding="utf-8")
    with pytest.raises(PlanError, match=r"key 'steps\[0\]\.urn': required key is missing"):
        guard.load_preview(path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(PlanError, match="malformed JSON"):
        guard.load_preview(path)


def test_without_a_baseline_the_guard_says_so() -> None:
    verdict = guard.verdict(None)
    assert verdict.ok
    assert "--against REF" in verdict.markdown


def test_preview_exit_code_follows_the_guard_and_allow_replace(
    production: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _edited(production, lambda d: _database(d)["inputs"].update(identifier="old-name"))
    # The database had another identifier in the ref.
    argv = [*preview_against_ref(monkeypatch, before, tmp_path), "--quiet"]
    assert main(argv[:-1]) == 1
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Destructive-change guard: FAIL" in report
    assert main([*argv[:-1], "--allow-replace", _urn(production)]) == 0
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Destructive-change guard: pass" in report
    assert "Allowed by `--allow-replace`" in report
    assert "## Policy: pass" in report
    assert "## Monthly cost: pass" in report
