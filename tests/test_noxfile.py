"""The noxfile's environment plumbing: pins per environment, argument handling, exit codes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from infra.settings import REPO_ROOT, load_environment


def load_noxfile() -> ModuleType:
    spec = importlib.util.spec_from_file_location("billing_noxfile", REPO_ROOT / "noxfile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


noxfile = load_noxfile()


class RecordingSession:
    """Just enough of nox.Session to see which interpreter runs which command."""

    def __init__(self, tmp: Path) -> None:
        self.runs: list[tuple[str, ...]] = []
        self.installs: list[tuple[str, ...]] = []
        self.env: dict[str, str] = {}
        self.bin = str(tmp)
        self.posargs: list[str] = []

    def log(self, *_args: Any) -> None:
        pass

    def run_install(self, *args: str, **_kwargs: Any) -> None:
        self.installs.append(args)


def test_pins_are_read_per_environment() -> None:
    for env in ("dev", "staging", "production"):
        settings = load_environment(env)
        assert noxfile._pins(env) == {
            "pulumi": settings.pins.python.pulumi,
            "pulumi-aws": settings.pins.python.pulumi_aws,
            "pulumi-gcp": settings.pins.python.pulumi_gcp,
        }


def test_environment_arguments_are_parsed_and_removed() -> None:
    args = ["--env", "dev", "--offline", "--env=production", "--cloud", "aws", "--against", "HEAD"]
    assert noxfile._stack_arguments(args) == (
        ["dev", "production"],
        ["--offline", "--cloud", "aws", "--against", "HEAD"],
    )
    # Not an abbreviation of --env: passed through to `python -m infra`.
    assert noxfile._stack_arguments(["--en", "x"]) == ([], ["--en", "x"])
    assert noxfile._stack_arguments(["--offline"]) == ([], ["--offline"])
    assert noxfile._environment_names() == ["dev", "staging", "production"]


def test_environments_sharing_pins_render_in_one_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(noxfile, "_run_with_exit_code", lambda _s, *a: calls.append(a))
    noxfile._run_infra(RecordingSession(tmp_path), "preview", ["--offline"])
    assert calls == [
        (
            "python",
            "-m",
            "infra",
            "preview",
            "--env",
            "dev",
            "--env",
            "staging",
            "--env",
            "production",
            "--offline",
        ),
    ]


def test_an_environment_with_other_pins_gets_its_own_interpreter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    locked = noxfile._locked_versions()
    newer = {**locked, "pulumi-aws": "7.99.0"}
    monkeypatch.setattr(noxfile, "_pins", lambda env: newer if env == "dev" else locked)
    monkeypatch.setattr(noxfile, "_locked_versions", lambda: locked)
    monkeypatch.setattr(noxfile, "ROOT", tmp_path)
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(noxfile, "_run_with_exit_code", lambda _s, *a: calls.append(a))
    session = RecordingSession(tmp_path)
    noxfile._run_infra(session, "preview", [])
    assert len(calls) == 2
    pinned = [c for c in calls if c[0] != "python"]
    assert len(pinned) == 1
    assert pinned[0][0].startswith(str(tmp_path / ".nox" / "pins-"))
    assert pinned[0][4:6] == ("--env", "dev")
    installed = [a for a in session.installs if "pip" in a]
    assert installed
    assert "pulumi-aws==7.99.0" in installed[0]


def test_a_command_exit_code_is_carried_through(tmp_path: Path) -> None:
    session = RecordingSession(tmp_path)
    with pytest.raises(SystemExit) as caught:
        noxfile._run_with_exit_code(session, sys.executable, "-c", "raise SystemExit(2)")
    assert caught.value.code == 2
    noxfile._run_with_exit_code(session, sys.executable, "-c", "pass")  # 0: no exit
