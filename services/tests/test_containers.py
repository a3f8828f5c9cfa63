"""The Dockerfile keeps the container rules and agrees with the manifests (no daemon needed).

One Dockerfile, services/Dockerfile, builds both images: `--target api` and `--target worker`
share the build stage (the locked dependencies) and the runtime stage (user, package).
"""

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
DOCKERFILE = SERVICES / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|pip install|uv |apt-get install)\b")
# What the images may contain of the repository: the shipped package, nothing for tests or
# local runs (services/devservers.py, local.py, bench.py, tests/).
SHIPPED = {"services/__init__.py", "services/billing", "services/api", "services/worker"}


def stages() -> dict[str, tuple[str, list[str]]]:
    """Each stage's name -> (its base, its instructions), continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    joined = re.sub(r"\\\n\s*", " ", text)
    instructions = [line for line in joined.splitlines() if line and not line.startswith("#")]
    result: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for instruction in instructions:
        found = re.match(r"^FROM (\S+) AS (\S+)$", instruction)
        if found:
            current = []
            result[found.group(2)] = (found.group(1), current)
        elif current is not None:
            current.append(instruction)
    return result


def image(target: str) -> list[str]:
    """The instructions that make up a target's final image, base stages first."""
    all_stages = stages()
    chain: list[str] = []
    while target in all_stages:
        base, instructions = all_stages[target]
        chain = instructions + chain
        target = base
    return chain


def manifest(service: str) -> dict[str, object]:
    with (SERVICES / service / "manifest.toml").open("rb") as handle:
        return tomllib.load(handle)


def test_one_dockerfile_pinned_with_a_shared_build_stage() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[\w.-]*@sha256:[0-9a-f]{64}$", text, re.M)
    assert set(stages()) == {"build", "runtime", "api", "worker"}
    assert stages()["api"][0] == stages()["worker"][0] == "runtime"
    assert any("--require-hashes" in line for line in stages()["build"][1])
    assert not list(SERVICES.glob("*/Dockerfile"))


@pytest.mark.parametrize("service", ["api", "worker"])
def test_each_target_runs_unprivileged_with_its_manifest_command(service: str) -> None:
    final = image(service)
    user = next(line for line in final if line.startswith("USER "))
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert any(line.startswith("HEALTHCHECK ") for line in final)
    assert not [line for line in final if line.startswith("RUN ") and BUILD_TOOLS.search(line)]
    command = [line for line in final if line.startswith("CMD ")][-1]
    assert json.loads(command.removeprefix("CMD ")) == manifest(service)["command"]


@pytest.mark.parametrize("service", ["api", "worker"])
def test_images_copy_only_the_shipped_package(service: str) -> None:
    copied = {
        line.split()[1]
        for line in image(service)
        if line.startswith("COPY ") and not line.startswith("COPY --from")
    }
    assert copied <= SHIPPED
    other = "worker" if service == "api" else "api"
    assert f"services/{other}" not in copied
    lines = (SERVICES / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    # Everything is excluded first, then only the shipped package let back in.
    assert patterns[0] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in patterns if line.startswith("!")}
    assert allowed == SHIPPED | {"pyproject.toml", "uv.lock"}


def test_api_image_exposes_the_manifest_port() -> None:
    final = image("api")
    assert f"EXPOSE {manifest('api')['port']}" in final
    healthcheck = next(line for line in final if line.startswith("HEALTHCHECK "))
    assert str(manifest("api")["health_path"]) in healthcheck


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is installed on Linux only (test dependency group)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
