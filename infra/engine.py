"""`nox -s engine`: the AWS dev stack through the real Pulumi CLI, against a moto server.

What the `engine` GitHub Actions job runs (.github/workflows/engine.yml), where the pinned CLI
installs: a local file backend, the passphrase secrets provider (the state never leaves the
runner), the AWS provider pointed at moto on 127.0.0.1 (infra/aws/provider.py), and then
`preview`, `up`, a second `preview` that must report no changes (`--expect-no-changes`) and
`destroy`. Any step that fails ends the check with exit 1, naming the step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from infra.aws.provider import LOCAL_ENDPOINT_KEY
from infra.errors import InfraError
from infra.settings import REPO_ROOT, Cloud, SettingsError, environment

STACK_PROJECT = REPO_ROOT / "infra" / "stacks" / "aws"
# Credentials moto accepts; they reach no real account.
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Encrypts this run's local state only (it is deleted with the runner).
LOCAL_PASSPHRASE = "engine-check-local-state"  # noqa: S105


class EngineCheckError(InfraError):
    """A step of the real-engine check that failed, named."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def moto_server(python: str, account_id: str, timeout: float = 60.0) -> Iterator[str]:
    """A moto server on 127.0.0.1 answering as ``account_id``; yields its URL."""
    port = free_port()
    env = {**os.environ, "MOTO_ACCOUNT_ID": account_id}
    process = subprocess.Popen(
        [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):  # noqa: S310 - loopback
                    break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise EngineCheckError(f"moto server did not start on {url}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def steps(stack: str, endpoint: str) -> list[tuple[str, list[str]]]:
    """The CLI calls of the check, in order, each with a name."""
    on = ["--stack", stack, "--non-interactive"]
    return [
        ("create the stack", ["stack", "init", stack, "--secrets-provider", "passphrase"]),
        (
            "point the provider at moto",
            ["config", "set", f"billing-aws:{LOCAL_ENDPOINT_KEY}", endpoint, *on],
        ),
        ("preview", ["preview", *on]),
        ("up", ["up", "--yes", "--skip-preview", *on]),
        ("preview after up reports no changes", ["preview", "--expect-no-changes", *on]),
        ("destroy", ["destroy", "--yes", "--skip-preview", *on]),
    ]


def check(env_name: str, work: Path, moto_python: str) -> None:
    """Run every step; raise :class:`EngineCheckError` naming the first that fails."""
    env = environment(env_name)
    if Cloud.AWS not in env.clouds or env.aws is None:
        raise SettingsError(f"environments/{env_name}", "clouds", "the check needs an AWS stack")
    if shutil.which("pulumi") is None:
        raise EngineCheckError("the Pulumi CLI is not on PATH (the engine job installs it)")
    from infra.plans.produce.live import pinned_python, pulumi_command  # noqa: PLC0415 - needs the CLI

    pulumi_command(env)  # the pinned CLI version, or nothing runs

    if work.exists():
        shutil.rmtree(work)
    project = work / "stacks" / "aws"
    shutil.copytree(
        STACK_PROJECT, project, ignore=shutil.ignore_patterns("__pycache__", "Pulumi.*.yaml")
    )
    state = work / "state"
    state.mkdir(parents=True)
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    variables = {
        **os.environ,
        **MOTO_CREDENTIALS,
        "AWS_REGION": env.aws.region,
        "PULUMI_BACKEND_URL": f"file://{state}",
        "PULUMI_CONFIG_PASSPHRASE": LOCAL_PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_PYTHON_CMD": pinned_python(env),
        "PYTHONPATH": python_path,
    }
    with moto_server(moto_python, env.aws.account_id) as endpoint:
        for name, args in steps(env.name, endpoint):
            print(f"engine check: {name}: pulumi {' '.join(args)}", flush=True)
            code = subprocess.run(["pulumi", *args], cwd=project, env=variables, check=False)
            if code.returncode != 0:
                raise EngineCheckError(f"{name}: `pulumi {args[0]}` exited {code.returncode}")
    print(f"engine check: {env.name}-aws passed: preview, up, no changes, destroy", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.engine", description=__doc__)
    parser.add_argument("--env", default="dev", help="the environment whose AWS stack runs")
    parser.add_argument("--work", default="build/engine", help="where the copy and state go")
    parser.add_argument(
        "--moto-python", default=sys.executable, help="the interpreter that has moto[server]"
    )
    args = parser.parse_args(argv)
    try:
        check(args.env, Path(args.work).resolve(), args.moto_python)
    except InfraError as exc:
        print(f"error: engine check: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
