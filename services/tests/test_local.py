"""`python -m services.local` brings the platform up from the manifests and down on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services import devservers
from services.tests.processes import REPOSITORY_ROOT, wait_for


@pytest.fixture
def state_dir() -> Iterator[Path]:
    directory = devservers.scratch_dir("billing-local-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_local_serves_the_api_and_stops_cleanly(state_dir: Path) -> None:
    local = subprocess.Popen(
        [sys.executable, "-m", "services.local", "--dir", str(state_dir)],
        cwd=REPOSITORY_ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    printed: list[str] = []
    assert local.stdout is not None
    reader = threading.Thread(target=lambda: printed.extend(local.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: (
                any(line.startswith("Bearer token") for line in printed) or local.poll() is not None
            ),
            timeout=90,
            what="services.local to print its URL",
        )
        url = next(line.split()[-1] for line in printed if line.startswith("Billing API ready at"))
        token = next(line.split()[-1] for line in printed if line.startswith("Bearer token"))
        internal = next(
            line.split()[-1] for line in printed if line.startswith("Readiness and metrics at")
        )
        assert httpx.get(f"{internal}/ready").json()["status"] == "ready"
        assert httpx.get(f"{url}/ready").status_code == 404
        listed = httpx.get(f"{url}/v1/plans", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200
        local.send_signal(signal.SIGTERM)
        assert local.wait(timeout=60) == 0
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
        reader.join(timeout=5)
        if local.stdout is not None:
            local.stdout.close()
    assert not (state_dir / "postgres" / "data" / "postmaster.pid").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
