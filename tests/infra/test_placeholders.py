"""Example values never reach a live run; `init` writes real ones, validated, with a diff."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from infra import cli
from infra.init import Edit, edits_from, init, set_key
from infra.placeholders import find_examples, refuse_examples
from infra.settings import Cloud, SettingsError, load_environment

from .plans.conftest import Standin, run_cli

DIGEST = "sha256:" + "3f" * 32
REAL: dict[str, object] = {
    "repository": "acme-payments/billing",
    "aws_account": "210987654321",
    "aws_region": "eu-west-1",
    "aws_domain": "api.dev.acme-payments.io",
    "hosted_zone_id": "Z04173712JQ8PQ5QX8ZFY",
    "aws_state_bucket": "acme-billing-state-dev",
    "gcp_project": "acme-billing-dev",
    "gcp_region": "europe-west1",
    "gcp_zones": "europe-west1-b,europe-west1-c,europe-west1-d",
    "gcp_domain": "api-gcp.dev.acme-payments.io",
    "dns_zone": "acme-payments-dev",
    "gcp_state_bucket": "acme-billing-state-dev-gcp",
    "alarm_email": "billing-oncall@acme-payments.io",
    "image": [
        f"api=ghcr.io/acme-payments/billing-api:1.4.2@{DIGEST}",
        f"worker=ghcr.io/acme-payments/billing-worker:1.4.2@{DIGEST}",
    ],
}


def _args(**values: object) -> argparse.Namespace:
    fields = dict.fromkeys(REAL) | {"env": "dev"} | values
    return argparse.Namespace(**fields)


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("repository", "an example organisation"),
        ("alarms.email", "an example domain"),
        ("aws.account_id", "an example account id"),
        ("aws.domain", "an example domain"),
        ("aws.hosted_zone_id", "an example hosted zone"),
        ("gcp.project", "an example project or bucket"),
        ("pulumi.aws.backend_url", "an example project or bucket"),
        ("images.api", "an example organisation"),
    ],
)
def test_the_shipped_examples_are_found_where_they_are_set(key: str, kind: str) -> None:
    found = {e.key: e for e in find_examples("dev")}
    assert found[key].kind == kind
    expected_file = {
        "repository": "defaults.toml",
        "alarms.email": "defaults.toml",
        "images.api": "pins.toml",
    }.get(key, "settings.toml")
    assert found[key].file.name == expected_file


def test_a_cloud_the_run_does_not_touch_is_not_judged() -> None:
    keys = {e.key for e in find_examples("dev", [Cloud.AWS])}
    assert "aws.account_id" in keys
    assert not {k for k in keys if k.startswith(("gcp.", "pulumi.gcp."))}


def test_refusal_names_the_file_and_the_key() -> None:
    with pytest.raises(SettingsError) as error:
        refuse_examples(["staging"])
    assert str(error.value).startswith("environments/defaults.toml: key 'repository': ")
    assert "`nox -s init`" in str(error.value)


@pytest.mark.parametrize(
    "command",
    [
        ["up", "--env", "dev", "--cloud", "aws"],
        ["drift", "--env", "dev", "--cloud", "gcp"],
        ["preview", "--env", "staging"],
    ],
)
def test_live_commands_refuse_examples_before_the_cli_runs(
    standin: Standin, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(*command, capsys=capsys)
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith("error: environments/defaults.toml: key 'repository':")
    assert "Traceback" not in err
    assert standin.calls() == [], "the Pulumi CLI never ran"
    assert "Live preview" not in out


def test_the_offline_preview_keeps_working_on_the_examples(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ("preview", "--offline", "--env", "dev", "--cloud", "aws", "--out", str(tmp_path))
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 0, err
    assert out.startswith("Offline preview")


def test_set_key_keeps_comments_and_adds_missing_keys() -> None:
    text = '# top\nbranch = "dev"\n\n[aws]\n# the account\naccount_id = "1"\n\n[policy]\n'
    changed = set_key(text, "aws", "account_id", "210987654321")
    assert changed == text.replace('"1"', '"210987654321"')
    added = set_key(changed, "aws", "hosted_zone_id", "Z1")
    assert 'account_id = "210987654321"\nhosted_zone_id = "Z1"\n' in added
    top = set_key(text, "", "repository", "acme/billing")
    assert top.startswith('# top\nbranch = "dev"\nrepository = "acme/billing"\n')
    new_section = set_key(text, "alarms", "email", "a@b.io")
    assert new_section.endswith('[policy]\n\n[alarms]\nemail = "a@b.io"\n')


def test_init_writes_real_values_validates_them_and_shows_the_diff(
    environments_copy: Path,
) -> None:
    before = (environments_copy / "dev" / "settings.toml").read_text()
    diff = init("dev", edits_from(_args(**REAL)), root=environments_copy)
    assert '-account_id = "111111111111"\n' in diff
    assert '+account_id = "210987654321"\n' in diff
    assert "+++ b/environments/dev/pins.toml" in diff
    after = (environments_copy / "dev" / "settings.toml").read_text()
    assert after != before
    assert "# The API's name and the Route 53 hosted zone" in after, "comments are kept"
    settings = load_environment("dev", root=environments_copy)
    assert settings.aws is not None
    assert settings.aws.account_id == "210987654321"
    assert settings.aws.allowed_account_ids == ["210987654321"]
    assert settings.pulumi.aws is not None
    assert settings.pulumi.aws.backend_url == "s3://acme-billing-state-dev?region=eu-west-1"
    assert settings.pins.images["api"].endswith(DIGEST)
    assert find_examples("dev", root=environments_copy) == []
    refuse_examples(["dev"], root=environments_copy)  # nothing left to refuse


def test_init_refuses_a_bad_value_and_writes_nothing(environments_copy: Path) -> None:
    snapshot = environments_copy.parent / "before"
    shutil.copytree(environments_copy, snapshot)
    edits = edits_from(_args(aws_account="2109876543", gcp_project="acme-billing-dev"))
    with pytest.raises(SettingsError) as error:
        init("dev", edits, root=environments_copy)
    assert error.value.key == "aws.account_id"
    assert error.value.file.endswith("dev/settings.toml")
    for path in snapshot.rglob("*.toml"):
        assert (environments_copy / path.relative_to(snapshot)).read_text() == path.read_text()


def test_init_with_a_malformed_image_pin_names_the_key() -> None:
    with pytest.raises(SettingsError) as error:
        edits_from(_args(image=["api"]))
    assert error.value.key == "images"
    with pytest.raises(SettingsError) as error:
        edits_from(_args(gcp_region="europe-west1"))
    assert error.value.key == "gcp.zones"


def test_init_command_dry_run_prints_the_diff_and_what_is_left(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[object] = []
    monkeypatch.setattr("pathlib.Path.replace", lambda *a: written.append(a))
    code, out, err = run_cli(
        "init", "--env", "dev", "--aws-account", "210987654321", "--dry-run", capsys=capsys
    )
    assert code == 0, err
    assert '+account_id = "210987654321"' in out
    assert "Example values still in dev" in out
    assert written == [], "a dry run writes nothing"
    assert cli.main(["init", "--env", "dev"]) == 1
    assert "no values given" in capsys.readouterr().err


def test_init_edits_are_typed_by_file() -> None:
    edits = edits_from(_args(aws_account="210987654321", image=[f"api=ghcr.io/a/b:1@{DIGEST}"]))
    assert Edit("settings.toml", "aws", "account_id", "210987654321") in edits
    assert Edit("pins.toml", "images", "api", f"ghcr.io/a/b:1@{DIGEST}") in edits
