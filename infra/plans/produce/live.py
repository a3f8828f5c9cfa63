"""Live path: preview, up and drift through Pulumi's Automation API (needs the Pulumi CLI).

Each stack is the project in ``infra/stacks/<cloud>`` with the stack named after the
environment, against the environment's own backend and secrets provider. The CLI's version
must equal the environment's pin (``environments/<env>/pins.toml: pulumi_cli``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

from infra.errors import EXIT_DRIFT, EXIT_ERROR, EXIT_OK
from infra.plans.judge import drift as drift_report
from infra.plans.judge.guard import changes_from_preview
from infra.plans.produce.offline import PROJECTS
from infra.plans.read.diff import StackDiff
from infra.plans.read.formats import (
    STACK_TYPE,
    Preview,
    ResourceState,
    Urn,
    decode,
    parse_preview,
    read_preview,
    redact,
)
from infra.plans.read.model import Plan, PlanError, Resource
from infra.settings import (
    ENVIRONMENTS_DIR,
    PINS_FILE,
    REPO_ROOT,
    Cloud,
    EnvironmentSettings,
    SettingsError,
)

STACKS_DIR = REPO_ROOT / "infra" / "stacks"


class LiveError(PlanError):
    """A Pulumi CLI run that failed, named by stack."""


def work_dir(cloud: Cloud) -> Path:
    return STACKS_DIR / cloud.value


def _pins_file(env: EnvironmentSettings) -> Path:
    return ENVIRONMENTS_DIR / env.name / PINS_FILE


def pulumi_command(env: EnvironmentSettings) -> auto.PulumiCommand:
    """The CLI on PATH, refused unless its version is the environment's pin."""
    try:
        # Our own check below is stricter (equality with the pin) and says which file to edit.
        command = auto.PulumiCommand(skip_version_check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise LiveError("pulumi", "version", f"cannot run the Pulumi CLI: {exc}") from None
    found = str(command.version) if command.version is not None else "an unparseable version"
    if found != env.pins.pulumi_cli:
        raise SettingsError(
            _pins_file(env),
            "pulumi_cli",
            f"the Pulumi CLI on PATH is {found} but {env.name} pins {env.pins.pulumi_cli}; "
            "install the pinned CLI (nothing was run)",
        )
    return command


def pinned_python(env: EnvironmentSettings) -> str:
    """This interpreter, refused unless it carries exactly the environment's pinned packages.

    The CLI runs the stack program with it (``PULUMI_PYTHON_CMD``, see ``workspace_env``); the
    Nox sessions start ``python -m infra`` in a virtual environment built from the pins.
    """
    for key, wanted in env.pins.python.model_dump(by_alias=True).items():
        try:
            found = metadata.version(key)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != wanted:
            raise SettingsError(
                _pins_file(env),
                f"python.{key}",
                f"{sys.executable} has {key} {found} but {env.name} pins {wanted}; run through "
                f"`nox -s preview|up|drift -- --env {env.name}`, which installs the pins "
                "(nothing was run)",
            )
    return sys.executable


def workspace_env(env: EnvironmentSettings, cloud: Cloud) -> dict[str, str]:
    """Environment variables for every CLI call on one of ``env``'s stacks."""
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {
        "PULUMI_BACKEND_URL": env.pulumi.backend(cloud).backend_url,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        # A checkout without the stack's committed Pulumi.<stack>.yaml uses the secrets manager
        # recorded in the stack's state (its KMS key) instead of a new passphrase manager, which
        # would fail ("passphrase must be set", pulumi/pulumi#5650) or, with a passphrase, give
        # each job its own key so a saved plan cannot be decrypted by the job that applies it
        # (pulumi/actions#1016). pkg/cmd/pulumi/stack/secrets.go GetSecretsManager.
        "PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER": "true",
        # The program runs in the pinned interpreter: Pulumi.yaml sets the pip toolchain, which
        # runs $PULUMI_PYTHON_CMD (sdk/python/toolchain/pip.go CommandPath); without it the
        # language host would pick uv (the repository's uv.lock) and its .venv, synced to
        # uv.lock rather than to the environment's pins (toolchain.go ResolveToolchain).
        "PULUMI_PYTHON_CMD": pinned_python(env),
        # The stack programs import `infra`; the CLI runs them from infra/stacks/<cloud>.
        "PYTHONPATH": python_path,
    }


def stack_settings_file(env: EnvironmentSettings, cloud: Cloud) -> Path:
    """``Pulumi.<env>.yaml``: bootstrap writes it (secrets provider, encrypted data key)."""
    return work_dir(cloud) / f"Pulumi.{env.name}.yaml"


def _check_stack_settings(env: EnvironmentSettings, cloud: Cloud) -> None:
    """A committed ``Pulumi.<env>.yaml`` must name the settings' secrets provider."""
    path = stack_settings_file(env, cloud)
    if not path.is_file():
        return
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(path, None, f"invalid YAML: {exc}") from None
    wanted = env.pulumi.backend(cloud).secrets_provider
    found = data.get("secretsprovider") if isinstance(data, dict) else None
    if found != wanted:
        raise SettingsError(
            path,
            "secretsprovider",
            f"{found!r} is not environments/{env.name}/settings.toml's pulumi.{cloud.value}."
            f"secrets_provider {wanted!r}; re-create it: `nox -s bootstrap -- --env {env.name}`",
        )


def _options(env: EnvironmentSettings, cloud: Cloud) -> auto.LocalWorkspaceOptions:
    if cloud not in env.clouds:
        raise SettingsError(
            ENVIRONMENTS_DIR / env.name, "clouds", f"{env.name} does not target {cloud}"
        )
    return auto.LocalWorkspaceOptions(
        env_vars=workspace_env(env, cloud),
        secrets_provider=env.pulumi.backend(cloud).secrets_provider,
        pulumi_command=pulumi_command(env),
    )


def open_stack(env: EnvironmentSettings, cloud: Cloud) -> auto.Stack:
    """Select the environment's stack of ``cloud``; only bootstrap creates stacks."""
    options = _options(env, cloud)
    _check_stack_settings(env, cloud)
    name = f"{env.name}-{cloud.value}"
    try:
        return auto.select_stack(stack_name=env.name, work_dir=str(work_dir(cloud)), opts=options)
    except auto.errors.StackNotFoundError:
        backend = env.pulumi.backend(cloud).backend_url
        raise LiveError(
            name,
            "stack",
            f"no stack '{env.name}' of {PROJECTS[cloud]} in {backend}; bootstrap creates every "
            f"stack with its secrets provider: `nox -s bootstrap -- --env {env.name} --cloud "
            f"{cloud.value}` (previews, drift and up only select)",
        ) from None
    except auto.errors.CommandError as exc:
        raise LiveError(name, "stack", _first_error_line(str(exc))) from None


def create_stack(env: EnvironmentSettings, cloud: Cloud) -> Path:
    """Bootstrap: create the stack with the settings' secrets provider (or keep the existing one).

    ``stack init --secrets-provider`` writes ``Pulumi.<env>.yaml`` (the provider and the data
    key the KMS key wraps) into the project folder; commit it. Returns its path.
    """
    options = _options(env, cloud)
    try:
        auto.create_stack(stack_name=env.name, work_dir=str(work_dir(cloud)), opts=options)
    except auto.errors.StackAlreadyExistsError:
        open_stack(env, cloud)
    except auto.errors.CommandError as exc:
        raise LiveError(f"{env.name}-{cloud.value}", "stack", _first_error_line(str(exc))) from None
    _check_stack_settings(env, cloud)
    return stack_settings_file(env, cloud)


def _first_error_line(text: str) -> str:
    # A CommandError's text puts " stderr: " before the CLI's first line of error output.
    lines = [line.strip().removeprefix("stderr: ") for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["the Pulumi CLI failed"])[-1]


def _resource(state: ResourceState) -> Resource:
    return Resource(
        urn=state.urn,
        type=state.type,
        name=Urn.parse(state.urn).name,
        parent=state.parent,
        protect=state.protect,
        inputs=redact(state.inputs),
        dependencies=sorted(set(state.dependencies)),
        custom=state.custom,
        provider=state.provider,
    )


def plan_from_preview(preview: Preview, env: EnvironmentSettings, cloud: Cloud) -> Plan:
    """A plan from live ``pulumi preview --json``: one resource per step with a newState."""
    resources = []
    outputs: dict[str, Any] = {}
    for step in preview.steps:
        # A delete has no newState: the resource is not in the plan.
        if step.new_state is None:
            continue
        resources.append(_resource(step.new_state))
        if step.new_state.type == STACK_TYPE:
            outputs = redact(step.new_state.outputs)
    project = PROJECTS[cloud]
    return Plan(
        environment=env.name,
        cloud=cloud.value,
        stack=f"{project}/{env.name}",
        mode="live",
        resources=sorted(resources, key=lambda r: r.urn),
        outputs=dict(sorted(outputs.items())),
    )


def _run_preview(
    stack: auto.Stack, source: str, *, refresh: bool, save_plan: Path | None
) -> tuple[str, str, bool]:
    """Run ``pulumi preview --json``: (stdout, stderr, whether the CLI exited 0)."""
    stdout: list[str] = []
    stderr: list[str] = []
    try:
        stack.preview(
            json=True,
            refresh=refresh or None,
            expect_no_changes=refresh or None,
            plan=str(save_plan.resolve()) if save_plan else None,
            on_output=stdout.append,
            on_error=stderr.append,
        )
    except auto.errors.CommandError as exc:
        return "\n".join(stdout), _first_error_line("\n".join(stderr) or str(exc)), False
    except RuntimeError as exc:  # the Automation API's "summary event never found"
        raise LiveError(source, None, str(exc)) from None
    return "\n".join(stdout), "\n".join(stderr), True


def preview(env: EnvironmentSettings, cloud: Cloud, *, save_plan: Path | None = None) -> Plan:
    """Preview one stack live; ``save_plan`` keeps Pulumi's update plan for ``up`` to apply."""
    return preview_with_changes(env, cloud, save_plan=save_plan)[0]


def preview_with_changes(
    env: EnvironmentSettings, cloud: Cloud, *, save_plan: Path | None = None
) -> tuple[Plan, StackDiff]:
    """Preview one stack live: its plan, and its steps as changes against the deployed state."""
    stack = open_stack(env, cloud)
    source = f"pulumi preview --json ({env.name}-{cloud.value})"
    if save_plan is not None:
        save_plan.parent.mkdir(parents=True, exist_ok=True)
    stdout, stderr, ok = _run_preview(stack, source, refresh=False, save_plan=save_plan)
    if not ok:
        raise LiveError(source, None, stderr)
    preview = parse_preview(decode(stdout, source), source)
    changes = StackDiff(f"{env.name}-{cloud.value}", changes_from_preview(preview))
    return plan_from_preview(preview, env, cloud), changes


def up(env: EnvironmentSettings, cloud: Cloud, plan_file: Path | None = None) -> str:
    """Deploy one stack; with ``plan_file``, apply exactly that saved update plan."""
    if plan_file is not None and not plan_file.is_file():
        raise PlanError(plan_file, None, "file not found (save one with a preview's save_plan)")
    stack = open_stack(env, cloud)
    try:
        result = stack.up(
            plan=str(plan_file.resolve()) if plan_file else None,
            on_output=lambda line: print(line, flush=True),
        )
    except auto.errors.CommandError as exc:
        raise LiveError(
            f"pulumi up ({env.name}-{cloud.value})", None, _first_error_line(str(exc))
        ) from None
    return str(result.summary.result)


def release(env: EnvironmentSettings, cloud: Cloud) -> list[str]:
    """After a failed or cancelled deploy: drop the stack's lock, list its pending operations.

    A deploy killed mid-``up`` leaves its lock file (``pulumi cancel`` deletes a DIY backend's
    locks: pkg/backend/diy/backend.go CancelCurrentUpdate) and may leave pending operations in
    the state, resources the engine began creating, updating or deleting and never heard back
    about; those need a person (``pulumi refresh``, then ``pulumi stack export``/``import``).
    Returns one line per pending operation.
    """
    name = f"{env.name}-{cloud.value}"
    stack = open_stack(env, cloud)
    try:
        stack.cancel()
        deployment = stack.export_stack().deployment or {}
    except auto.errors.CommandError as exc:
        raise LiveError(name, "cancel", _first_error_line(str(exc))) from None
    pending = deployment.get("pending_operations") or []
    lines = []
    for operation in pending:
        resource = operation.get("resource") or {}
        lines.append(f"{operation.get('type', '?')} {resource.get('urn', '?')}")
    return lines


def drift_stack(env: EnvironmentSettings, cloud: Cloud) -> drift_report.DriftReport:
    """One stack's drift: a refreshed preview that expects no changes (never `pulumi refresh`)."""
    name = f"{env.name}-{cloud.value}"
    source = f"pulumi preview --refresh --expect-no-changes --json ({name})"
    try:
        stack = open_stack(env, cloud)
        stdout, stderr, ok = _run_preview(stack, source, refresh=True, save_plan=None)
        # --expect-no-changes exits non-zero on drift; the JSON on stdout still says what drifted.
        try:
            steps = parse_preview(decode(stdout, source), source).steps
        except PlanError as exc:
            raise LiveError(source, None, stderr if not ok else str(exc)) from None
        report = drift_report.DriftReport(name, steps)
        if not ok and not report.drifted:
            raise LiveError(source, None, stderr)
    except (PlanError, SettingsError) as exc:
        return drift_report.DriftReport(name, [], error=str(exc))
    return report


def _finish(report: drift_report.DriftReport, out_dir: Path) -> None:
    path = drift_report.write_report(report, out_dir)
    print(f"{drift_report.console_line(report)}\n    report: {path}", flush=True)


def drift(stacks: Sequence[tuple[EnvironmentSettings, Cloud]], out_dir: Path) -> int:
    """Check every stack (a failing one hides none of the others): 1 error, 2 drift, 0 clean."""
    reports = []
    for env, cloud in stacks:
        report = drift_stack(env, cloud)
        _finish(report, out_dir)
        reports.append(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(drift_report.summary_markdown(reports), encoding="utf-8")
    codes = {r.exit_code for r in reports}
    for code in (EXIT_ERROR, EXIT_DRIFT):
        if code in codes:
            return code
    return EXIT_OK


def drift_from_file(path: Path, out_dir: Path) -> int:
    """Analyse a saved ``pulumi preview --json``; write ``out_dir/<stem>.md``; 0, 2, or 1."""
    try:
        steps = read_preview(path).steps
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    report = drift_report.DriftReport(path.stem, steps)
    _finish(report, out_dir)
    return report.exit_code
