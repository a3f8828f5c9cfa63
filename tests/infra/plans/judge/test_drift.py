"""Drift analysis of saved `pulumi preview --json` output: reports, exit codes, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.plans.produce import live
from infra.plans.read.formats import read_preview
from infra.plans.read.model import PlanError
from infra.settings import REPO_ROOT

DATA = Path(__file__).parents[1] / "data"
DRIFTED = DATA / "drift_production_aws.json"
CLEAN = DATA / "clean_production_aws.json"

DRIFT_OPS = [
    "create",
    "update",
    "delete",
    "replace",
    "create-replacement",
    "delete-replaced",
    "discard-replaced",
    "import",
    "import-replacement",
    "read-replacement",
    "refresh",
    "remove-pending-replace",
]


def _preview_with(op: str) -> dict[str, object]:
    urn = "urn:pulumi:dev::billing-aws::aws:s3/bucket:Bucket::assets"
    return {
        "steps": [
            {"op": "same", "urn": "urn:pulumi:dev::billing-aws::pulumi:pulumi:Stack::s"},
            {"op": op, "urn": urn, "diffReasons": ["tags"]},
        ]
    }


def test_drifted_preview_reports_every_changed_resource(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = live.drift_from_file(DRIFTED, tmp_path)

    assert code == 2
    report = (tmp_path / "drift_production_aws.md").read_text(encoding="utf-8")
    assert "**Drift found** in 4 of 7 resources (1 create, 1 delete, 1 replace, 1 update)" in report
    rows = {
        line.split("|")[3].strip(): line for line in report.splitlines() if line.startswith("| `")
    }
    assert set(rows) == {
        "cache-subnets",
        "network-app-sg",
        "network-nat-eip-1",
        "database-instance",
    }
    assert "`replace`" in rows["database-instance"]
    assert "`aws:rds/instance:Instance`" in rows["database-instance"]
    assert "`engineVersion`" in rows["database-instance"]
    assert "`ingress[0].cidrBlocks[0]`, `tags.owner`" in rows["network-app-sg"]
    assert "`delete`" in rows["network-nat-eip-1"]
    # Unchanged resources (same, read) are not drift.
    assert "network-vpc" not in report
    assert "getAmi" not in report
    assert "DRIFT in 4 resources" in capsys.readouterr().out


def test_replace_alone_is_drift(tmp_path: Path) -> None:
    assert live.drift_from_file(DATA / "replace_only.json", tmp_path) == 2
    assert "`replace`" in (tmp_path / "replace_only.md").read_text(encoding="utf-8")


def test_clean_preview_is_no_drift(tmp_path: Path) -> None:
    assert live.drift_from_file(CLEAN, tmp_path) == 0
    report = (tmp_path / "clean_production_aws.md").read_text(encoding="utf-8")
    assert "No drift: 3 resources match their recorded state." in report


@pytest.mark.parametrize("op", DRIFT_OPS)
def test_every_changing_op_is_drift(op: str, tmp_path: Path) -> None:
    path = tmp_path / "preview.json"
    path.write_text(json.dumps(_preview_with(op)), encoding="utf-8")
    assert live.drift_from_file(path, tmp_path / "out") == 2
    assert f"`{op}`" in (tmp_path / "out" / "preview.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("op", ["same", "read"])
def test_unchanging_ops_are_not_drift(op: str, tmp_path: Path) -> None:
    path = tmp_path / "preview.json"
    path.write_text(json.dumps(_preview_with(op)), encoding="utf-8")
    assert live.drift_from_file(path, tmp_path / "out") == 0


def test_changed_keys_come_from_detailed_diff_and_reasons() -> None:
    steps = read_preview(DRIFTED).steps
    by_name = {s.name: s for s in steps}
    assert by_name["database-instance"].keys == ["engineVersion"]
    assert by_name["network-app-sg"].keys == ["ingress", "ingress[0].cidrBlocks[0]", "tags.owner"]
    assert by_name["cache-subnets"].keys == []
    assert by_name["cache-subnets"].type == "aws:elasticache/subnetGroup:SubnetGroup"


MALFORMED = {
    "not_json.json": ('{"steps": [', None, "malformed JSON"),
    "empty.json": ("", None, "empty"),
    "list.json": ("[]", None, "not a `pulumi preview --json` object"),
    "no_steps.json": ('{"changeSummary": {}}', "steps", "required key is missing"),
    "steps_object.json": ('{"steps": {"op": "same"}}', "steps", "valid list"),
    "step_string.json": ('{"steps": ["create"]}', "steps[0]", "valid dictionary"),
    "no_op.json": ('{"steps": [{"urn": "urn:pulumi:dev::p::t::n"}]}', "steps[0].op", "missing"),
    "no_urn.json": (
        '{"steps": [{"op": "same", "urn": "u"}, {"op": "create"}]}',
        "steps[1].urn",
        "missing",
    ),
    "bad_diff.json": (
        '{"steps": [{"op": "update", "urn": "u", "detailedDiff": []}]}',
        "steps[0].detailedDiff",
        "valid dictionary",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_preview_is_an_error_naming_file_and_key(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, key, message = MALFORMED[name]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "out"

    assert live.drift_from_file(path, out) == 1

    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}")
    assert len(err.splitlines()) == 1
    assert message in err
    if key is not None:
        assert f"key '{key}'" in err
    assert not out.exists(), "nothing is written for bad input"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="file not found"):
        read_preview(tmp_path / "absent.json")
    assert live.drift_from_file(tmp_path / "absent.json", tmp_path / "out") == 1


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""},
    )


@pytest.mark.parametrize(
    ("source", "code"), [(CLEAN, 0), (DRIFTED, 2), (DATA / "replace_only.json", 2)]
)
def test_cli_drift_from_json_exit_codes(source: Path, code: int, tmp_path: Path) -> None:
    result = _cli(
        "drift", "--from-json", str(source), "--out", str(tmp_path / "drift"), cwd=tmp_path
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "drift" / f"{source.stem}.md").is_file()


def test_cli_drift_from_malformed_json_fails_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "preview.json"
    bad.write_text('{"steps": [{"op": "update"}]}', encoding="utf-8")
    result = _cli("drift", "--from-json", str(bad), "--out", str(tmp_path / "drift"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: {bad}: key 'steps[0].urn': required key is missing")
    assert "no drift" not in result.stdout.lower()
    assert not (tmp_path / "drift").exists()
