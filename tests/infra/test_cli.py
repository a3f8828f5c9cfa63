"""`python -m infra`: commands that render nothing start without the Pulumi SDK."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infra.settings import REPO_ROOT


def _imported(*args: str) -> list[str]:
    """The modules a new `python -X importtime -m infra ARGS` imports, in importtime's order."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "infra", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return [line.rsplit("|", 1)[1].strip() for line in lines[1:]]  # the first is the header


@pytest.mark.parametrize("args", [["affected", "--base", "HEAD"], ["--help"]])
def test_commands_that_render_nothing_import_no_pulumi(args: list[str]) -> None:
    modules = _imported(*args)
    assert "infra.cli" in modules  # the listing is real
    sdk = [m for m in modules if m.split(".")[0] in {"pulumi", "pulumi_aws", "pulumi_gcp"}]
    assert sdk == [], f"`python -m infra {' '.join(args)}` imports {sdk[:5]}"
