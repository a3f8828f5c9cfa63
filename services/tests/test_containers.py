"""The Dockerfiles keep the container rules and agree with the manifests (no daemon needed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[1]
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|pip install|uv |apt-get install)\b")


def stages(service: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into stages."""
    text = (SERVICES / service / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n\s*", " ", text)
    instructions = [line for line in joined.splitlines() if line and not line.startswith("#")]
    result: list[list[str]] = []
    for instruction in instructions:
        if instruction.startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def manifest(service: str) -> dict[str, object]:
    with (SERVICES / service / "manifest.toml").open("rb") as handle:
        return tomllib.load(handle)


@pytest.mark.parametrize("service", ["api", "worker"])
def test_dockerfile_is_multi_stage_pinned_and_non_root(service: str) -> None:
    text = (SERVICES / service / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[\w.-]*@sha256:[0-9a-f]{64}$", text, re.M)
    build, final = stages(service)[0], stages(service)[-1]
    assert len(stages(service)) >= 2
    assert any("--require-hashes" in line for line in build)
    user = next(line for line in final if line.startswith("USER "))
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert any(line.startswith("HEALTHCHECK ") for line in final)
    assert not [line for line in final if line.startswith("RUN ") and BUILD_TOOLS.search(line)]
    command = next(line for line in final if line.startswith("CMD "))
    assert json.loads(command.removeprefix("CMD ")) == manifest(service)["command"]


def test_api_image_exposes_the_manifest_port() -> None:
    final = stages("api")[-1]
    assert f"EXPOSE {manifest('api')['port']}" in final
    healthcheck = next(line for line in final if line.startswith("HEALTHCHECK "))
    assert str(manifest("api")["health_path"]) in healthcheck


@pytest.mark.parametrize("service", ["api", "worker"])
def test_dockerfile_passes_hadolint(service: str) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is installed on Linux only (test dependency group)")
    result = subprocess.run(
        [hadolint, str(SERVICES / service / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
