"""The environment loader: shipped files load; every kind of bad file stops with file and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import infra.settings
from infra.manifests import load_manifest
from infra.plans.judge.guard import guard
from infra.plans.read.diff import Change, StackDiff
from infra.policy.rules import Context
from infra.settings import (
    SERVICES_DIR,
    Cloud,
    NatGateways,
    SettingsError,
    Tier,
    known_environments,
    load_environment,
    promotion,
    server_processes,
    server_processes_error,
)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_shipped_environments_load() -> None:
    assert known_environments() == ["dev", "staging", "production"]
    production = load_environment("production")
    assert production.is_production
    assert production.aws is not None
    assert production.aws.availability_zones == 3
    assert production.aws.nat_gateways is NatGateways.PER_AZ
    assert production.database.backup_retention_days == 30
    assert production.services["api"].min_tasks == 2
    assert production.services["api"].max_tasks == 10
    assert set(production.clouds) == {Cloud.AWS, Cloud.GCP}


def test_environments_override_only_what_differs() -> None:
    dev = load_environment("dev")
    staging = load_environment("staging")
    # dev sets no retention: the shared default applies; staging overrides it.
    assert dev.database.backup_retention_days == 1
    assert staging.database.backup_retention_days == 7
    assert dev.aws is not None
    assert dev.aws.region == "us-east-1"
    assert dev.pins.python.requirements() == [
        "pulumi==3.272.0",
        "pulumi-aws==7.51.1",
        "pulumi-gcp==10.2.0",
    ]


def test_pins_match_the_lock_file() -> None:
    import tomllib

    from infra.settings import REPO_ROOT

    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    dev = load_environment("dev")
    # dev always runs the lock's versions: promotion carries them onward from there.
    assert locked["pulumi"] == dev.pins.python.pulumi
    assert locked["pulumi-aws"] == dev.pins.python.pulumi_aws
    assert locked["pulumi-gcp"] == dev.pins.python.pulumi_gcp


# (file, old text, new text, expected file in the message, expected key, message pattern)
BAD_FILES = [
    pytest.param(
        "dev/settings.toml",
        'branch = "dev"',
        'branch = "dev"\ncolour = "blue"',
        "dev/settings.toml",
        "colour",
        "unknown key",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "dev/settings.toml",
        "[aws]\n",
        "[aws]\nzones = 2\n",
        "dev/settings.toml",
        "aws.zones",
        "unknown key",
        id="unknown-nested-key",
    ),
    pytest.param(
        "staging/settings.toml",
        "[services.api]\nmin_tasks = 1",
        '[services.api]\nmin_tasks = "1"',
        "staging/settings.toml",
        "services.api.min_tasks",
        "valid integer",
        id="wrong-type",
    ),
    pytest.param(
        "staging/settings.toml",
        "[services.api]\nmin_tasks = 1",
        "[services.api]\nmin_tasks = 9",
        "staging/settings.toml",
        "services.api.max_tasks",
        "min_tasks 9 is greater than max_tasks 5",
        id="min-greater-than-max",
    ),
    pytest.param(
        "dev/settings.toml",
        'vpc_cidr = "10.10.0.0/16"',
        'vpc_cidr = "10.10.0.0/33"',
        "dev/settings.toml",
        "aws.vpc_cidr",
        "not a valid CIDR",
        id="bad-cidr",
    ),
    pytest.param(
        "dev/settings.toml",
        'vpc_cidr = "10.10.0.0/16"',
        'vpc_cidr = "10.10.0.1/16"',
        "dev/settings.toml",
        "aws.vpc_cidr",
        "host bits set",
        id="cidr-with-host-bits",
    ),
    pytest.param(
        "production/pins.toml",
        'pulumi-aws = "7.51.1"\n',
        "",
        "production/pins.toml",
        "python.pulumi-aws",
        "required key is missing",
        id="missing-provider-pin",
    ),
    pytest.param(
        "production/pins.toml",
        'pulumi_cli = "3.272.0"',
        'pulumi_cli = "latest"',
        "production/pins.toml",
        "pulumi_cli",
        "should match pattern",
        id="unpinned-cli",
    ),
    pytest.param(
        "staging/pins.toml",
        'worker = "ghcr.io/example-org/billing-worker:0.1.0@sha256:' + "0" * 63 + '2"\n',
        "",
        "staging/pins.toml",
        "images.worker",
        "missing image pin",
        id="missing-image-pin",
    ),
    pytest.param(
        "dev/settings.toml",
        'allowed_account_ids = ["111111111111"]',
        'allowed_account_ids = ["999999999999"]',
        "dev/settings.toml",
        "aws.allowed_account_ids",
        "not in allowed_account_ids",
        id="account-not-allowed",
    ),
    pytest.param(
        "defaults.toml",
        "retention_days = 7",
        "retention_days = 8",
        "defaults.toml",
        "logs.retention_days",
        "not a CloudWatch retention period",
        id="bad-default-names-defaults-file",
    ),
    pytest.param(
        "dev/settings.toml",
        "[aws]\n",
        "[aws\n",
        "dev/settings.toml",
        None,
        "invalid TOML",
        id="malformed-toml",
    ),
    pytest.param(
        "production/settings.toml",
        'nat_gateways = "per_az"',
        'nat_gateways = "three"',
        "production/settings.toml",
        "aws.nat_gateways",
        "'single' or 'per_az'",
        id="unknown-enum-value",
    ),
    pytest.param(
        "staging/settings.toml",
        'branch = "staging"',
        'branch = "staging"\ntier = "dev"',
        "staging/settings.toml",
        "tier",
        "unknown key",
        id="tier-only-in-promotion-file",
    ),
    pytest.param(
        "production/settings.toml",
        "cpu = 1024\nmemory = 2048",
        "cpu = 1024\nmemory = 512",
        "production/settings.toml",
        "services.api.memory",
        "does not fit",
        id="fargate-memory-out-of-range",
    ),
    pytest.param(
        "dev/settings.toml",
        'branch = "dev"',
        'branch = "dev"\n[services.billing]\nmin_tasks = 1\nmax_tasks = 2',
        "dev/settings.toml",
        "services.billing",
        "no service 'billing'",
        id="unknown-service",
    ),
]


@pytest.mark.parametrize(("file", "old", "new", "named_file", "key", "pattern"), BAD_FILES)
def test_bad_environment_files_are_rejected_with_file_and_key(
    environments_copy: Path,
    file: str,
    old: str,
    new: str,
    named_file: str,
    key: str | None,
    pattern: str,
) -> None:
    edit(environments_copy / file, old, new)
    env = file.split("/", maxsplit=1)[0] if "/" in file else "dev"
    with pytest.raises(SettingsError) as caught:
        load_environment(env, root=environments_copy)
    error = caught.value
    assert error.file.endswith(named_file)
    assert error.key == key
    assert re.search(pattern, error.message), error.message
    # One line, naming the file (and the key where there is one).
    assert "\n" not in str(error).strip() or pattern == "invalid TOML"
    assert named_file in str(error)


def test_unknown_environment(environments_copy: Path) -> None:
    with pytest.raises(
        SettingsError, match=r"unknown environment 'qa' \(known: dev, staging, production\)"
    ):
        load_environment("qa", root=environments_copy)


def test_missing_required_key_names_the_environment_file(environments_copy: Path) -> None:
    edit(environments_copy / "dev/settings.toml", 'account_id = "111111111111"\n', "")
    with pytest.raises(SettingsError) as caught:
        load_environment("dev", root=environments_copy)
    assert caught.value.key == "aws.account_id"
    assert caught.value.file.endswith("dev/settings.toml")
    assert caught.value.message == "required key is missing"


def test_cloud_not_targeted_needs_no_settings(environments_copy: Path) -> None:
    path = environments_copy / "dev/settings.toml"
    text = path.read_text()
    gcp_section = text[text.index("[gcp]") : text.index("[services.api]")]
    gcp_backend = text[text.index("[pulumi.gcp]") : text.index("# Policy pack")]
    text = text.replace(gcp_section, "").replace(gcp_backend, "")
    path.write_text('clouds = ["aws"]\n' + text)
    dev = load_environment("dev", root=environments_copy)
    assert dev.clouds == [Cloud.AWS]
    assert dev.gcp is None
    assert dev.pulumi.gcp is None


def test_freeze_window_needs_utc_offset(environments_copy: Path) -> None:
    path = environments_copy / "production/settings.toml"
    path.write_text(
        path.read_text()
        + "\n[[freeze]]\nstart = 2026-12-21T00:00:00\n"
        + 'end = 2027-01-04T00:00:00Z\nreason = "year end"\n'
    )
    with pytest.raises(SettingsError) as caught:
        load_environment("production", root=environments_copy)
    assert caught.value.key == "freeze[0].start"
    assert "UTC offset" in caught.value.message


def _add_environment(root: Path, name: str, tier: str | None) -> None:
    """A copy of staging named ``name``, listed last in promotion.toml with ``tier``."""
    (root / name).mkdir()
    for file in ("settings.toml", "pins.toml"):
        (root / name / file).write_text((root / "staging" / file).read_text())
    edit(root / name / "settings.toml", 'branch = "staging"', f'branch = "{name}"')
    if tier is not None:
        edit(root / "promotion.toml", '"production"]', f'"production", "{name}"]')
        (root / "promotion.toml").write_text(
            (root / "promotion.toml").read_text() + f'{name} = "{tier}"\n'
        )


def test_tiers_and_order_come_from_the_promotion_file(environments_copy: Path) -> None:
    assert [load_environment(e).tier for e in promotion().order] == list(Tier)
    _add_environment(environments_copy, "preprod", "staging")
    assert known_environments(environments_copy)[-1] == "preprod"
    preprod = load_environment("preprod", root=environments_copy)
    assert preprod.tier is Tier.STAGING
    assert not preprod.is_production
    assert not Context.of(preprod).production
    assert Context.of(preprod).hardened


def test_the_guard_follows_the_tier_not_the_name() -> None:
    database = Change(
        "urn:pulumi:x::billing-aws::aws:rds/instance:Instance::db",
        "aws:rds/instance:Instance",
        "delete",
    )
    result = guard([StackDiff(f"{env}-aws", [database]) for env in promotion().order])
    assert [stack for stack, _ in result.blocked] == ["staging-aws", "production-aws"]
    assert not Context("dev").hardened
    assert Context("staging").hardened
    assert not Context("staging").production


def test_an_environment_without_a_tier_names_the_promotion_file(environments_copy: Path) -> None:
    _add_environment(environments_copy, "qa", None)
    with pytest.raises(SettingsError) as caught:
        load_environment("qa", root=environments_copy)
    assert caught.value.file.endswith("promotion.toml")
    assert caught.value.key == "tier.qa"


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ('"production"]', '"production", "dev"]', "order", "dev listed more than once"),
        ('production = "production"', 'production = "live"', "tier.production", "'production'"),
        ('production = "production"\n', "", "tier", "no tier for production"),
    ],
)
def test_a_bad_promotion_file_names_the_key(
    environments_copy: Path, old: str, new: str, key: str, message: str
) -> None:
    edit(environments_copy / "promotion.toml", old, new)
    with pytest.raises(SettingsError) as caught:
        load_environment("dev", root=environments_copy)
    assert caught.value.file.endswith("promotion.toml")
    assert caught.value.key == key
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("command", "cpu", "refused"),
    [
        (["python", "-m", "services.api", "--processes=1"], 512, False),
        (["python", "-m", "services.api", "--processes=2"], 512, True),
        (["python", "-m", "services.api", "--processes=2"], 1024, True),
        (["python", "-m", "services.api", "--processes", "2"], 1024, True),
        (["python", "-m", "services.api", "--processes=2"], 2048, False),
        (["python", "-m", "services.api", "--processes=3"], 2048, True),
        (["python", "-m", "services.worker"], 256, False),
        # What `python -m services.api` would refuse at start.
        (["python", "-m", "services.api", "--processes=0"], 2048, True),
        (["python", "-m", "services.api", "--processes=two"], 2048, True),
        (["python", "-m", "services.api", "--processes"], 2048, True),
    ],
)
def test_server_processes_fit_the_tasks_whole_vcpus(
    command: list[str], cpu: int, refused: bool
) -> None:
    assert (server_processes(command) is None) is (command[-1] == "services.worker")
    assert (server_processes_error(command, cpu) is not None) is refused


def test_a_malformed_process_count_is_named() -> None:
    error = server_processes_error(["python", "-m", "services.api", "--processes=two"], 512)
    assert error == "--processes must be a whole number of at least 1, not 'two'"


def test_a_manifest_with_more_processes_than_vcpus_names_its_command(tmp_path: Path) -> None:
    folder = tmp_path / "api"
    folder.mkdir()
    shipped = (SERVICES_DIR / "api" / "manifest.toml").read_text()
    assert '"--processes=1"' in shipped
    (folder / "manifest.toml").write_text(shipped.replace('"--processes=1"', '"--processes=2"'))
    with pytest.raises(SettingsError) as error:
        load_manifest(folder / "manifest.toml")
    assert error.value.file.endswith("api/manifest.toml")
    assert error.value.key == "command"
    assert "2 server processes on 512 CPU units (0.5 vCPU)" in error.value.message


def test_a_cpu_override_is_checked_against_the_manifests_processes(
    environments_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A manifest sized for two processes (2 vCPU), and an environment that gives it one.
    services = tmp_path / "services"
    for manifest in SERVICES_DIR.glob("*/manifest.toml"):
        (services / manifest.parent.name).mkdir(parents=True)
        (services / manifest.parent.name / "manifest.toml").write_text(manifest.read_text())
    api = services / "api" / "manifest.toml"
    text = api.read_text().replace('"--processes=1"', '"--processes=2"')
    api.write_text(text.replace("cpu = 512\nmemory = 1024", "cpu = 2048\nmemory = 4096"))
    assert load_manifest(api).cpu == 2048
    monkeypatch.setattr(infra.settings, "SERVICES_DIR", services)
    with pytest.raises(SettingsError) as error:
        load_environment("production", root=environments_copy)
    assert error.value.file.endswith("environments/production/settings.toml")
    assert error.value.key == "services.api.cpu"
    assert "2 server processes on 1024 CPU units" in error.value.message
