"""The stand-in Pulumi CLI on PATH, its state, the checkouts it runs in, and its recorded calls."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra import cli
from infra.plans.produce import checkout, live
from infra.plans.read.model import Plan
from infra.settings import REPO_ROOT, Cloud, EnvironmentSettings

STANDIN_DIR = REPO_ROOT / "tests" / "standin"
DATA = Path(__file__).parent / "data"
SOURCE_STACKS = REPO_ROOT / "infra" / "stacks"


@dataclass(frozen=True)
class Call:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    program: dict[str, Any] = field(default_factory=dict)

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
    """Steers the stand-in CLI through its environment variables and reads back its log.

    Each checkout is a copy of infra/stacks (what a CI job checks out): the CLI writes
    Pulumi.<stack>.yaml there, never into this repository.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self._monkeypatch = monkeypatch
        self.root = root
        self.log = root / "standin.log"
        self.cloud = root / "cloud"

    def set(self, **variables: str) -> None:
        for name, value in variables.items():
            self._monkeypatch.setenv(f"PULUMI_STANDIN_{name.upper()}", value)

    def checkout(self, label: str) -> Path:
        """A checkout the live path now runs in: infra/stacks, and uv.lock at its root as here."""
        stacks = self.root / label / "infra" / "stacks"
        if not stacks.exists():
            shutil.copytree(SOURCE_STACKS, stacks, ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(REPO_ROOT / "uv.lock", self.root / label / "uv.lock")
        self._monkeypatch.setattr(live, "STACKS_DIR", stacks)
        return stacks

    def bootstrap(self, *stacks: tuple[EnvironmentSettings, Cloud]) -> Path:
        """Create the stacks as bootstrap does (an operator's checkout); then a job's checkout."""
        operator = self.checkout("operator")
        for env, cloud in stacks:
            live.create_stack(env, cloud)
        self.checkout("job")
        self.clear()
        return operator

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)

    def calls(self) -> list[Call]:
        if not self.log.exists():
            return []
        entries: list[dict[str, Any]] = [
            json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()
        ]
        return [Call(e["argv"], e["cwd"], e["env"], e.get("program", {})) for e in entries]

    def calls_of(self, *command: str) -> list[Call]:
        return [c for c in self.calls() if c.command == list(command)]

    def checkpoint(self, bucket_url: str, project: str, stack: str) -> dict[str, Any]:
        scheme, rest = bucket_url.split("://", 1)
        bucket = rest.split("?", 1)[0]
        path = self.cloud / scheme / bucket / ".pulumi" / "stacks" / project / f"{stack}.json"
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def locks(self, bucket_url: str, project: str, stack: str) -> list[Path]:
        scheme, rest = bucket_url.split("://", 1)
        bucket = rest.split("?", 1)[0]
        folder = self.cloud / scheme / bucket / ".pulumi" / "locks" / "organization"
        return sorted((folder / project / stack).glob("*.json"))


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Standin:
    """The stand-in `pulumi` first on PATH, run by this interpreter, in a checkout of its own."""
    python_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join([str(STANDIN_DIR), python_dir, os.environ["PATH"]]))
    for name in [n for n in os.environ if n.startswith(("PULUMI_", "UV_PROJECT_ENVIRONMENT"))]:
        monkeypatch.delenv(name)
    helper = Standin(monkeypatch, tmp_path)
    monkeypatch.setenv("PULUMI_STANDIN_LOG", str(helper.log))
    monkeypatch.setenv("PULUMI_STANDIN_PYTHON", sys.executable)
    monkeypatch.setenv("PULUMI_STANDIN_CLOUD", str(helper.cloud))
    helper.checkout("job")
    return helper


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`python -m infra ARGS` in-process (so it runs in the test's checkout): code, out, err."""
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def initialised(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Live CLI runs against the stand-in as if `nox -s init` had written real values: the
    example-value refusal (tested in tests/infra/test_placeholders.py) records the stacks it was
    asked about instead of refusing the shipped examples."""
    from infra import cli

    checked: list[list[str]] = []
    monkeypatch.setattr(
        cli, "refuse_examples", lambda stacks: checked.append([f"{e.name}-{c}" for e, c in stacks])
    )
    return checked


def preview_against_ref(monkeypatch: pytest.MonkeyPatch, before: Plan, out: Path) -> list[str]:
    """The argv of an offline production AWS preview `--against REF`, the ref rendering
    `before` (it stands in for the render of a git worktree)."""
    monkeypatch.setattr(checkout, "render_ref", lambda *_, **__: {before.key: before})
    return [
        "preview",
        "--offline",
        "--env",
        "production",
        "--cloud",
        "aws",
        "--against",
        "REF",
        "--out",
        str(out),
    ]
