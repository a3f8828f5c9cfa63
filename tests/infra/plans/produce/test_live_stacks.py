"""Stacks as the real engine runs them: secrets providers across jobs, each cloud's own backend,
the pinned interpreter, stacks created only by bootstrap, and a killed deploy's lock.

The stand-in CLI models each behaviour from Pulumi's source (tests/standin/pulumi cites it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.plans.produce import live
from infra.plans.read.model import PlanError
from infra.settings import (
    ENVIRONMENTS_DIR,
    Cloud,
    EnvironmentSettings,
    SettingsError,
    environment,
    known_environments,
    load_environment,
)
from tests.infra.plans.conftest import DATA, Standin, run_cli

PREVIEW = DATA / "preview_dev_aws.json"


def _pins(env: EnvironmentSettings) -> dict[str, str]:
    return dict(env.pins.python.model_dump(by_alias=True))


# -- 1. the secrets provider reaches every job -----------------------------------------------


def test_plan_job_and_up_job_both_decrypt_from_fresh_checkouts(
    standin: Standin, tmp_path: Path
) -> None:
    """No Pulumi.dev.yaml committed yet: both jobs use the state's KMS secrets manager."""
    env = environment("dev")
    standin.set(preview=str(PREVIEW))  # declares a secret (the database password)
    standin.bootstrap((env, Cloud.AWS))
    saved = tmp_path / "artifact" / "dev-aws.plan.json"

    plan_job = standin.checkout("plan-job")
    assert not (plan_job / "aws" / "Pulumi.dev.yaml").exists()
    live.preview(env, Cloud.AWS, save_plan=saved)
    standin.checkout("up-job")
    assert live.up(env, Cloud.AWS, plan_file=saved) == "succeeded"

    provider = env.pulumi.backend(Cloud.AWS).secrets_provider
    plan_text = saved.read_text(encoding="utf-8")
    assert "hunter2" not in plan_text, "the saved plan holds the secret encrypted"
    state = standin.checkpoint(env.pulumi.backend(Cloud.AWS).backend_url, "billing-aws", "dev")
    assert state["checkpoint"]["latest"]["secrets_providers"]["state"]["url"] == provider
    for call in standin.calls():
        assert "PULUMI_CONFIG_PASSPHRASE" not in call.env
        if call.command in (["preview"], ["up"]):
            assert call.env["PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER"] == "true"


def test_committed_stack_settings_are_the_ones_bootstrap_wrote(standin: Standin) -> None:
    env = environment("dev")
    standin.set(preview=str(PREVIEW))
    operator = standin.bootstrap((env, Cloud.AWS))
    written = operator / "aws" / "Pulumi.dev.yaml"
    settings = yaml.safe_load(written.read_text(encoding="utf-8"))
    assert settings["secretsprovider"] == env.pulumi.backend(Cloud.AWS).secrets_provider
    assert settings["encryptedkey"]

    # Committed: a job's checkout carries it, and the job leaves it as it was.
    job = standin.checkout("job-with-committed-settings")
    shutil.copy(written, job / "aws" / "Pulumi.dev.yaml")
    live.preview(env, Cloud.AWS)
    assert (job / "aws" / "Pulumi.dev.yaml").read_bytes() == written.read_bytes()


def test_without_the_fallback_a_fresh_checkout_cannot_decrypt(
    standin: Standin, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the fallback prevents (pulumi/pulumi#5650, pulumi/actions#1016), as the CLI does it."""
    env = environment("dev")
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((env, Cloud.AWS))
    plain = live.workspace_env

    def without_fallback(env: EnvironmentSettings, cloud: Cloud) -> dict[str, str]:
        variables = plain(env, cloud)
        del variables["PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER"]
        return variables

    monkeypatch.setattr(live, "workspace_env", without_fallback)
    with pytest.raises(PlanError, match="passphrase must be set with PULUMI_CONFIG_PASSPHRASE"):
        live.preview(env, Cloud.AWS)

    # With a passphrase each job makes its own salt: the plan cannot be decrypted by `up`.
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "each-job-has-one")
    saved = tmp_path / "dev-aws.plan.json"
    standin.checkout("plan-job")
    live.preview(env, Cloud.AWS, save_plan=saved)
    standin.checkout("up-job")
    with pytest.raises(PlanError, match="cipher: message authentication failed"):
        live.up(env, Cloud.AWS, plan_file=saved)


def test_committed_settings_for_another_provider_are_refused(standin: Standin) -> None:
    env = environment("dev")
    standin.bootstrap((env, Cloud.AWS))
    stale = live.STACKS_DIR / "aws" / "Pulumi.dev.yaml"
    stale.write_text("secretsprovider: awskms://alias/somewhere-else\n", encoding="utf-8")
    with pytest.raises(SettingsError) as raised:
        live.preview(env, Cloud.AWS)
    assert raised.value.key == "secretsprovider"
    assert raised.value.file.endswith("aws/Pulumi.dev.yaml")
    assert not standin.calls_of("preview")


# -- 2. each cloud's state and secrets in that cloud ------------------------------------------


@pytest.mark.parametrize("name", known_environments())
def test_each_cloud_keeps_state_and_secrets_in_its_own_cloud(name: str) -> None:
    env = environment(name)
    assert env.gcp is not None
    aws = env.pulumi.backend(Cloud.AWS)
    gcp = env.pulumi.backend(Cloud.GCP)
    assert aws.backend_url.startswith("s3://")
    assert aws.secrets_provider.startswith("awskms://")
    assert gcp.backend_url.startswith("gs://")
    assert gcp.secrets_provider.startswith(f"gcpkms://projects/{env.gcp.project}/locations/")
    assert aws.backend_url != gcp.backend_url


def _environments_copy(tmp_path: Path) -> Path:
    root = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, root)
    return root


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            'backend_url = "gs://example-billing-pulumi-state-dev-gcp"',
            'backend_url = "s3://example-billing-pulumi-state-dev?region=us-east-1"',
            "pulumi.gcp",
            "must be a gs:// bucket",
        ),
        (
            'secrets_provider = "gcpkms://projects/example-billing-dev/',
            'secrets_provider = "gcpkms://projects/example-billing-staging/',
            "pulumi.gcp.secrets_provider",
            "must be in the environment's project example-billing-dev",
        ),
        (
            'secrets_provider = "awskms://alias/billing-pulumi-dev?region=us-east-1"',
            'secrets_provider = "gcpkms://projects/example-billing-dev/locations/x"',
            "pulumi.aws",
            "must be a awskms:// key",
        ),
        ("[pulumi.gcp]", "[pulumi.elsewhere]", "pulumi.elsewhere", "unknown key"),
    ],
)
def test_a_backend_outside_its_cloud_is_refused(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    root = _environments_copy(tmp_path)
    settings = root / "dev" / "settings.toml"
    text = settings.read_text(encoding="utf-8")
    assert old in text
    settings.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(SettingsError) as raised:
        load_environment("dev", root)
    assert raised.value.key == key
    assert raised.value.file.endswith("dev/settings.toml")
    assert message in raised.value.message


def test_a_cloud_without_its_backend_is_refused(tmp_path: Path) -> None:
    root = _environments_copy(tmp_path)
    settings = root / "dev" / "settings.toml"
    text = settings.read_text(encoding="utf-8")
    head, _, tail = text.partition("[pulumi.gcp]")
    settings.write_text(head + tail.split("\n\n", 1)[1], encoding="utf-8")
    with pytest.raises(SettingsError, match=r"key 'pulumi.gcp': clouds lists gcp but"):
        load_environment("dev", root)


def test_gcp_stacks_run_against_the_gcp_backend(standin: Standin) -> None:
    env = environment("staging")
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((env, Cloud.GCP))
    live.preview(env, Cloud.GCP)
    gcp = env.pulumi.backend(Cloud.GCP)
    for call in standin.calls()[1:]:
        assert call.env["PULUMI_BACKEND_URL"] == gcp.backend_url
    state = standin.checkpoint(gcp.backend_url, "billing-gcp", "staging")
    assert state["checkpoint"]["latest"]["secrets_providers"]["state"]["url"] == (
        gcp.secrets_provider
    )


# -- 3. the program runs in the pinned interpreter ---------------------------------------------


@pytest.fixture
def bare_python_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A `python3` without any Pulumi package first on PATH (after the stand-in)."""
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    path = os.environ["PATH"].split(os.pathsep)
    monkeypatch.setenv("PATH", os.pathsep.join([path[0], str(bare / "bin"), *path[1:]]))
    return bare


def test_the_program_sees_the_pinned_versions(standin: Standin, bare_python_first: Path) -> None:
    env = environment("dev")
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((env, Cloud.AWS))
    live.preview(env, Cloud.AWS)
    (preview,) = standin.calls_of("preview")
    assert preview.env["PULUMI_PYTHON_CMD"] == sys.executable
    assert preview.program["python"] == sys.executable
    assert preview.program["versions"] == _pins(env)
    assert not preview.program["python"].startswith(str(bare_python_first))


@pytest.mark.usefixtures("bare_python_first")
def test_without_the_toolchain_option_the_host_would_pick_uv(standin: Standin) -> None:
    """Why Pulumi.yaml names the pip toolchain: uv.lock at the root selects uv and its .venv."""
    env = environment("dev")
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((env, Cloud.AWS))
    project = live.STACKS_DIR / "aws" / "Pulumi.yaml"
    settings = yaml.safe_load(project.read_text(encoding="utf-8"))
    assert settings["runtime"] == {"name": "python", "options": {"toolchain": "pip"}}
    settings["runtime"] = "python"
    project.write_text(yaml.safe_dump(settings), encoding="utf-8")
    with pytest.raises(PlanError, match=r"\.venv' is not a virtualenv"):
        live.preview(env, Cloud.AWS)


def test_an_interpreter_without_the_pins_runs_nothing(standin: Standin) -> None:
    env = environment("dev")
    standin.bootstrap((env, Cloud.AWS))
    python = env.pins.python.model_copy(update={"pulumi_aws": "7.0.0"})
    other = env.model_copy(update={"pins": env.pins.model_copy(update={"python": python})})
    with pytest.raises(SettingsError) as raised:
        live.preview(other, Cloud.AWS)
    assert raised.value.file == "environments/dev/pins.toml"
    assert raised.value.key == "python.pulumi-aws"
    assert "7.0.0" in raised.value.message
    assert not standin.calls_of("preview")


# -- 4. bootstrap creates stacks; previews, drift and up only select --------------------------


def test_a_missing_stack_is_one_error_that_says_to_bootstrap(
    standin: Standin, tmp_path: Path
) -> None:
    env = environment("dev")
    standin.set(preview=str(PREVIEW))
    hint = "nox -s bootstrap -- --env dev --cloud aws"
    with pytest.raises(PlanError, match=hint):
        live.preview(env, Cloud.AWS)
    with pytest.raises(PlanError, match=hint):
        live.up(env, Cloud.AWS)
    assert hint in (live.drift_stack(env, Cloud.AWS).error or "")
    assert not standin.calls_of("stack", "init")
    assert not standin.calls_of("preview")
    assert not (tmp_path / "cloud").exists(), "nothing was written to the backend"


def test_bootstrap_creates_each_stack_once_with_its_secrets_provider(
    standin: Standin, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.checkout("operator")
    code, out, err = run_cli("bootstrap", "--env", "dev", capsys=capsys)
    assert code == 0, err
    env = environment("dev")
    inits = standin.calls_of("stack", "init")
    assert sorted((Path(c.cwd).name, c.value("--secrets-provider")) for c in inits) == [
        ("aws", env.pulumi.backend(Cloud.AWS).secrets_provider),
        ("gcp", env.pulumi.backend(Cloud.GCP).secrets_provider),
    ]
    assert "commit " in out
    assert "Pulumi.dev.yaml" in out
    # Again: the stacks exist, so nothing is created twice.
    standin.clear()
    code, _, err = run_cli("bootstrap", "--env", "dev", capsys=capsys)
    assert code == 0, err
    assert len(standin.calls_of("stack", "init")) == 2
    assert len(standin.calls_of("stack", "select")) == 2


# -- 5. a deploy killed mid-`up` leaves nothing stuck behind ----------------------------------


def test_release_after_a_killed_deploy_cancels_the_lock_and_reports_pending(
    standin: Standin,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    env = environment("dev")
    backend = env.pulumi.backend(Cloud.AWS).backend_url
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((env, Cloud.AWS))
    standin.set(kill="up")
    with pytest.raises(PlanError):
        live.up(env, Cloud.AWS)
    assert len(standin.locks(backend, "billing-aws", "dev")) == 1
    standin.set(kill="")
    with pytest.raises(PlanError, match=r"the stack is currently locked by 1 lock\(s\)"):
        live.up(env, Cloud.AWS)

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    capsys.readouterr()
    code, out, _ = run_cli("release", "--env", "dev", "--cloud", "aws", capsys=capsys)
    assert code == 1, "pending operations need a person"
    assert "dev-aws: lock released; 1 pending operation(s)" in out
    assert "creating urn:pulumi:dev::billing-aws::" in out
    assert "pending operation(s)" in summary.read_text(encoding="utf-8")
    assert standin.locks(backend, "billing-aws", "dev") == []
    assert standin.calls_of("cancel")
    state = standin.checkpoint(backend, "billing-aws", "dev")
    assert json.dumps(state).count("pending_operations") == 1


# -- the saved plan is the plan applied --------------------------------------------------------


def test_up_refuses_a_plan_the_program_no_longer_matches(standin: Standin, tmp_path: Path) -> None:
    env = environment("dev")
    standin.set(preview=str(PREVIEW))
    standin.bootstrap((env, Cloud.AWS))
    saved = tmp_path / "dev-aws.plan.json"
    live.preview(env, Cloud.AWS, save_plan=saved)

    # The program changed after the preview: the flow log keeps 30 days, not 14.
    changed = json.loads(PREVIEW.read_text(encoding="utf-8"))
    step = next(s for s in changed["steps"] if s["urn"].endswith("::network-flow-logs"))
    step["newState"]["inputs"]["retentionInDays"] = 30
    edited = tmp_path / "changed.json"
    edited.write_text(json.dumps(changed), encoding="utf-8")
    standin.set(preview=str(edited))
    with pytest.raises(
        PlanError,
        match=r"network-flow-logs violates plan: properties changed: "
        r"~retentionInDays",
    ):
        live.up(env, Cloud.AWS, plan_file=saved)
