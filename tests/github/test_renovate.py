"""Renovate finds every pin it is meant to keep current, in the files as they are."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from infra.settings import REPO_ROOT

CONFIG = REPO_ROOT / ".github" / "renovate.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CONFIG.read_text(encoding="utf-8"))
    return data


def _python_regex(pattern: str) -> str:
    # Renovate's regexes are ECMAScript (named groups as (?<name>...)); Python spells (?P<name>...).
    return pattern.replace("(?<", "(?P<")


def test_custom_managers_match_every_pin_of_dev() -> None:
    config = load()
    pins_file = REPO_ROOT / "environments" / "dev" / "pins.toml"
    text = pins_file.read_text(encoding="utf-8")
    pins = tomllib.loads(text)
    found: dict[str, str] = {}
    for manager in config["customManagers"]:
        [file_pattern] = manager["managerFilePatterns"]
        assert re.search(file_pattern.strip("/"), "environments/dev/pins.toml")
        # Only dev: the other environments change by promotion, never by a bot.
        assert not re.search(file_pattern.strip("/"), "environments/production/pins.toml")
        for pattern in manager["matchStrings"]:
            for match in re.finditer(_python_regex(pattern), text):
                name = match.groupdict().get("depName") or manager["depNameTemplate"]
                found[name] = match["currentValue"]
    assert found == {
        "pulumi/pulumi": pins["pulumi_cli"],
        **{name: pins["python"][name] for name in ("pulumi", "pulumi-aws", "pulumi-gcp")},
    }


def test_updates_enter_at_dev_and_actions_stay_pinned_by_digest() -> None:
    config = load()
    assert config["baseBranches"] == ["dev"]
    assert "helpers:pinGitHubActionDigests" in config["extends"]
    assert config["lockFileMaintenance"]["enabled"] is True
