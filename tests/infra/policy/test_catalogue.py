"""The rule tables in infra/policy/README.md and the counts in README.md follow the code."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from infra.policy import catalogue
from infra.policy.readiness import READINESS
from infra.policy.rules import RULES
from infra.settings import Enforcement


def test_the_readmes_say_what_the_code_does() -> None:
    for path, text in catalogue.written().items():
        assert path.read_text(encoding="utf-8") == text, f"run `{catalogue.COMMAND}`"
    assert catalogue.main(["--check"]) == 0


def test_the_readme_counts_are_the_catalogue_s() -> None:
    security = catalogue.security_rules()
    assert len(security) + len(READINESS) == len(RULES)
    text = catalogue.README.read_text(encoding="utf-8")
    assert f"{len(security)} security and compliance rules" in text
    assert f"{len(READINESS)} deploy-readiness rules" in text
    changed = catalogue.readme(text, len(security) + 1, len(READINESS))
    assert f"{len(security) + 1} security and compliance rules" in changed
    assert f"{len(security)} security and compliance rules" not in changed


def test_a_changed_rule_changes_its_table() -> None:
    text = catalogue.POLICY_README.read_text(encoding="utf-8")
    security = catalogue.security_rules()
    first = security[0]
    changed = dataclasses.replace(
        first, description="A new description.", enforcement=Enforcement.ADVISORY
    )
    written = catalogue.policy_readme(text, [changed, *security[1:]], READINESS)
    assert written != text
    assert f"| `{first.name}` | aws | advisory |" in written
    assert "| A new description. |" in written
    assert first.description not in written
    fewer = catalogue.policy_readme(text, security, READINESS[1:])
    assert f"`{READINESS[0].name}`" not in fewer
    assert f"`{READINESS[1].name}`" in fewer


@pytest.fixture
def copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Both generated files copied to a temporary folder, where the command writes."""
    policy = tmp_path / "policy-README.md"
    top = tmp_path / "README.md"
    shutil.copy(catalogue.POLICY_README, policy)
    shutil.copy(catalogue.README, top)
    monkeypatch.setattr(catalogue, "POLICY_README", policy)
    monkeypatch.setattr(catalogue, "README", top)
    return policy, top


def test_check_names_a_stale_file_and_the_command_rewrites_it(
    copies: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, top = copies
    good = policy.read_text(encoding="utf-8")
    rule = catalogue.security_rules()[0]
    stale = good.replace(rule.description, "Something the rule does not check.")
    policy.write_text(stale, encoding="utf-8")
    count = len(catalogue.security_rules())
    wrong = top.read_text(encoding="utf-8").replace(f"{count} security", f"{count - 1} security")
    top.write_text(wrong, encoding="utf-8")
    assert catalogue.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"{policy} is out of date" in err
    assert f"{top} is out of date" in err
    assert policy.read_text(encoding="utf-8") == stale
    assert catalogue.main([]) == 0
    assert policy.read_text(encoding="utf-8") == good
    assert f"{count} security and compliance rules" in top.read_text(encoding="utf-8")
    assert catalogue.main(["--check"]) == 0


def test_a_missing_marker_is_an_error_naming_the_file_and_nothing_is_written(
    copies: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    policy, top = copies
    section = catalogue.Section("deploy-readiness rules", [])
    broken = policy.read_text(encoding="utf-8").replace(section.end + "\n", "")
    policy.write_text(broken, encoding="utf-8")
    count = len(catalogue.security_rules())
    wrong = top.read_text(encoding="utf-8").replace(f"{count} security", f"{count - 1} security")
    top.write_text(wrong, encoding="utf-8")
    assert catalogue.main([]) == 1
    err = capsys.readouterr().err
    assert f"{policy}: key 'deploy-readiness rules': the marker line" in err
    assert "is missing" in err
    assert policy.read_text(encoding="utf-8") == broken
    assert top.read_text(encoding="utf-8") == wrong
