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

from infra.errors import InfraError

Mode = Literal["offline", "live"]
PLAN_DIR = Path("build/plans")
SECRET = "[secret]"
UNKNOWN = "[unknown]"


class PlanError(InfraError):
    """A plan or preview file that cannot be read, named by file and key."""


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


_RESOURCE_FIELDS = {"urn": str, "type": str, "name": str, "parent": str, "protect": bool,
                    "inputs": dict, "dependencies": list}  # fmt: skip


def plan_from_dict(data: object, source: Path | str) -> Plan:
    """Validate a decoded plan file; raise PlanError naming the first bad key."""
    if not isinstance(data, dict):
        raise PlanError(source, None, "a plan is a JSON object")
    for key in ("environment", "cloud", "stack", "mode"):
        if not isinstance(data.get(key), str):
            raise PlanError(source, key, "missing or not a string")
    if data["mode"] not in ("offline", "live"):
        raise PlanError(source, "mode", "must be 'offline' or 'live'")
    raw = data.get("resources")
    if not isinstance(raw, list):
        raise PlanError(source, "resources", "missing or not a list")
    resources = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise PlanError(source, f"resources[{index}]", "not an object")
        for name, kind in _RESOURCE_FIELDS.items():
            if not isinstance(item.get(name), kind):
                raise PlanError(
                    source, f"resources[{index}].{name}", f"missing or not {kind.__name__}"
                )
        resources.append(
            Resource(
                urn=item["urn"],
                type=item["type"],
                name=item["name"],
                parent=item["parent"],
                protect=item["protect"],
                inputs=item["inputs"],
                dependencies=item["dependencies"],
                custom=bool(item.get("custom", True)),
                provider=str(item.get("provider", "")),
            )
        )
    outputs = data.get("outputs", {})
    if not isinstance(outputs, dict):
        raise PlanError(source, "outputs", "not an object")
    return Plan(data["environment"], data["cloud"], data["stack"], data["mode"], resources, outputs)


def load_plan(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(path, None, "file not found") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(path, None, f"malformed JSON: {exc}") from None
    return plan_from_dict(data, path)
