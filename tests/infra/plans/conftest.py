"""The stand-in Pulumi CLI on PATH, and the calls it recorded."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.settings import REPO_ROOT

STANDIN_DIR = REPO_ROOT / "tests" / "standin"
DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Call:
    argv: list[str]
    cwd: str
    env: dict[str, str]

    @property
    def command(self) -> list[str]:
        """The subcommand words, without the global --non-interactive flag."""
        words = [a for a in self.argv if a != "--non-interactive"]
        return words[:2] if words[:1] == ["stack"] else words[:1]

    def value(self, flag: str) -> str | None:
        if flag in self.argv:
            index = self.argv.index(flag)
            return self.argv[index + 1] if index + 1 < len(self.argv) else None
        return None


class Standin:
    """Steers the stand-in CLI through its environment variables and reads back its log."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
        self._monkeypatch = monkeypatch
        self.log = log

    def set(self, **variables: str) -> None:
        for name, value in variables.items():
            self._monkeypatch.setenv(f"PULUMI_STANDIN_{name.upper()}", value)

    def calls(self) -> list[Call]:
        if not self.log.exists():
            return []
        entries: list[dict[str, Any]] = [
            json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()
        ]
        return [Call(e["argv"], e["cwd"], e["env"]) for e in entries]

    def calls_of(self, *command: str) -> list[Call]:
        return [c for c in self.calls() if c.command == list(command)]


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Standin:
    """The stand-in `pulumi` first on PATH (run by this interpreter), with a fresh call log."""
    python_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([str(STANDIN_DIR), python_dir, os.environ["PATH"]]))
    for name in [n for n in os.environ if n.startswith(("PULUMI_STANDIN_", "PULUMI_BACKEND"))]:
        monkeypatch.delenv(name)
    log = tmp_path / "standin.log"
    monkeypatch.setenv("PULUMI_STANDIN_LOG", str(log))
    return Standin(monkeypatch, log)
