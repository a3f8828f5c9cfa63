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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)

from infra.loading import load_toml_model
from infra.settings import ENVIRONMENTS_DIR, SettingsError

ALLOW_FILE = "allow-replace.toml"


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


def _toml_date(value: Any, handler: ValidatorFunctionWrapHandler) -> dt.date:
    try:
        date: dt.date = handler(value)
    except ValidationError:
        raise ValueError("a date, for example 2026-12-31 (a TOML date: no quotes)") from None
    return date


class _Model(BaseModel):
    # strict: a quoted "2026-12-31" is not a date, nor 3 a URN; extra: an unknown key is an error.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Entry(_Model):
    urn: str
    reason: str
    # Strict: a TOML date only (a date-time is refused too).
    expires: Annotated[dt.date, WrapValidator(_toml_date)]

    @field_validator("reason")
    @classmethod
    def _said(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("say why the replacement is needed")
        return value.strip()


class _AllowFile(_Model):
    allow: list[_Entry] = []


def load_allowances(environment: str, root: Path | None = None) -> list[Allowance]:
    """The environment's reviewed allowances (none when it has no allow-replace.toml)."""
    path = (root or ENVIRONMENTS_DIR) / environment / ALLOW_FILE
    if not path.exists():
        return []
    entries = load_toml_model(path, _AllowFile, SettingsError).allow
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        # What the file's own environment can replace: a URN of one of its stacks.
        if not entry.urn.startswith(f"urn:pulumi:{environment}::"):
            raise SettingsError(
                path,
                f"allow[{index}].urn",
                f"must be a URN of a {environment} stack (urn:pulumi:{environment}::...)",
            )
        if entry.urn in seen:
            raise SettingsError(path, f"allow[{index}].urn", "listed twice")
        seen.add(entry.urn)
    return [Allowance(environment, e.urn, e.reason, e.expires, str(path)) for e in entries]
