"""The CI entry points install PostgreSQL and Redis through one script, .ci/install-servers."""

from __future__ import annotations

import re
import subprocess

from infra.settings import REPO_ROOT

SCRIPT = REPO_ROOT / ".ci" / "install-servers"
CALLERS = [
    REPO_ROOT / ".ci" / "run",
    REPO_ROOT / ".github" / "workflows" / "ci.yml",
    REPO_ROOT / ".github" / "workflows" / "services.yml",
    REPO_ROOT / "noxfile.py",
]


def test_every_caller_uses_the_one_script() -> None:
    installs = re.compile(r"apt-get install[^\n]*(postgresql|redis-server)")
    for caller in CALLERS:
        text = caller.read_text(encoding="utf-8")
        assert "install-servers" in text, caller
        assert not installs.search(text), f"{caller} installs the servers itself"
    script = SCRIPT.read_text(encoding="utf-8")
    assert all(word in script for word in ("apt-get install", "postgresql", "redis-server"))


def test_the_script_is_a_no_op_where_the_servers_are_installed() -> None:
    # This machine has both (the service tests need them), so nothing is installed or stopped.
    result = subprocess.run([str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
