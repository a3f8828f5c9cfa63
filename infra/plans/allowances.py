"""Reviewed replacements: ``environments/<env>/allow-replace.toml`` lets the destructive-change
guard pass a named deletion or replacement of a stateful resource.

Each entry names a URN of that environment, a reason and an expiry date::

    [[allow]]
    urn = "urn:pulumi:production::billing-aws::aws:rds/instance:Instance::billing-production-db"
    reason = "INC-123: re-create the database encrypted with the new key"
    expires = 2026-12-31

The file changes by pull request like any other environment file, so an allowed replacement is
reviewed and goes through CI instead of an administrator's laptop. An entry past its expiry date
fails the guard (it no longer allows anything), so allowances cannot outlive their reason.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path

from infra.settings import ENVIRONMENTS_DIR, SettingsError

ALLOW_FILE = "allow-replace.toml"
_KEYS = frozenset({"urn", "reason", "expires"})


@dataclass(frozen=True)
class Allowance:
    """One reviewed deletion or replacement."""

    environment: str
    urn: str
    reason: str
    expires: dt.date
    file: str

    def expired(self, today: dt.date) -> bool:
        # The expiry date is the last day the allowance holds.
        return today > self.expires


def _entry(raw: object, path: Path, index: int, environment: str) -> Allowance:
    where = f"allow[{index}]"
    if not isinstance(raw, dict):
        raise SettingsError(path, where, "each [[allow]] entry is a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise SettingsError(path, f"{where}.{unknown[0]}", "unknown key (urn, reason, expires)")
    for key in sorted(_KEYS - set(raw)):
        raise SettingsError(path, f"{where}.{key}", "missing")
    urn, reason, expires = raw["urn"], raw["reason"], raw["expires"]
    if not isinstance(urn, str) or not urn.startswith(f"urn:pulumi:{environment}::"):
        raise SettingsError(
            path,
            f"{where}.urn",
            f"must be a URN of a {environment} stack (urn:pulumi:{environment}::...)",
        )
    if not isinstance(reason, str) or not reason.strip():
        raise SettingsError(path, f"{where}.reason", "say why the replacement is needed")
    if isinstance(expires, dt.datetime) or not isinstance(expires, dt.date):
        raise SettingsError(path, f"{where}.expires", "a date, for example 2026-12-31")
    return Allowance(environment, urn, reason.strip(), expires, str(path))


def load_allowances(environment: str, root: Path | None = None) -> list[Allowance]:
    """The environment's reviewed allowances (none when it has no allow-replace.toml)."""
    path = (root or ENVIRONMENTS_DIR) / environment / ALLOW_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(path, None, f"invalid TOML: {exc}") from None
    unknown = sorted(set(data) - {"allow"})
    if unknown:
        raise SettingsError(path, unknown[0], "unknown key (only [[allow]] entries)")
    entries = data.get("allow", [])
    if not isinstance(entries, list):
        raise SettingsError(path, "allow", "use [[allow]] tables")
    found = [_entry(raw, path, i, environment) for i, raw in enumerate(entries)]
    seen: set[str] = set()
    for index, allowance in enumerate(found):
        if allowance.urn in seen:
            raise SettingsError(path, f"allow[{index}].urn", "listed twice")
        seen.add(allowance.urn)
    return found
