"""The plan JSON: one file per (environment, cloud), the one intermediate form every check reads.

Resources carry the fields of ``newState`` in ``pulumi preview --json`` (urn, type, name,
parent, protect, inputs in the engine's camelCase, dependencies), so offline renders and
live previews are read alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from infra.errors import InfraError
from infra.loading import decode_json, first_error, read_text

Mode = Literal["offline", "live"]
PLAN_DIR = Path("build/plans")
SECRET = "[secret]"
UNKNOWN = "[unknown]"


class PlanError(InfraError):
    """A plan or preview file that cannot be read, named by file and key."""


# Strict: a plan file's "true" is not a boolean, nor 1 a string; unknown fields are ignored.
@with_config(ConfigDict(strict=True))
@dataclass(frozen=True)
class Resource:
    urn: str
    type: str
    name: str
    parent: str
    protect: bool
    inputs: dict[str, Any]
    dependencies: list[str]
    custom: bool = True
    provider: str = ""


@with_config(ConfigDict(strict=True))
@dataclass(frozen=True)
class Plan:
    environment: str
    cloud: str
    stack: str
    mode: Mode
    resources: list[Resource]
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.environment}-{self.cloud}"

    def by_urn(self) -> dict[str, Resource]:
        return {r.urn: r for r in self.resources}

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def to_json(self) -> str:
        data = asdict(self)
        data["resources"] = sorted(data["resources"], key=lambda r: r["urn"])
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.key}.json"
        # Write-then-rename: a reader never sees half a plan.
        partial = path.with_suffix(".json.partial")
        partial.write_text(self.to_json(), encoding="utf-8")
        partial.replace(path)
        return path


_PLAN = TypeAdapter(Plan)


def parse_plan(text: str, source: Path | str) -> Plan:
    """Validate a plan file's text; raise PlanError naming the first bad key."""
    if not isinstance(decode_json(text, source, PlanError), dict):
        raise PlanError(source, None, "a plan is a JSON object")
    try:
        # JSON mode: strict types, and objects for the dataclasses.
        return _PLAN.validate_json(text)
    except ValidationError as exc:
        raise first_error(exc, source, PlanError) from None


def plan_from_dict(data: object, source: Path | str) -> Plan:
    """A decoded plan (an edited copy, say), validated exactly as its JSON text would be."""
    return parse_plan(json.dumps(data), source)


def load_plan(path: Path) -> Plan:
    return parse_plan(read_text(path, PlanError), path)
