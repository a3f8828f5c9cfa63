"""Pulumi's formats, read in one place: URNs, the engine's wire markers, ``pulumi preview --json``.

The offline mocks, the live path, the guard, the drift report, the report and the policy pack all
read URNs, redact wire values and parse previews through this module. It does not import the
Pulumi SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infra.loading import decode_json, first_error, read_text
from infra.plans.read.model import SECRET, UNKNOWN, PlanError

# -- URNs ----------------------------------------------------------------------------------------

URN_PREFIX = "urn:pulumi:"
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True)
class Urn:
    """``urn:pulumi:<stack>::<project>::<qualified type>::<name>``.

    The qualified type is the parents' types and the resource's own, joined by ``$``, except the
    root Stack's (https://www.pulumi.com/docs/iac/concepts/resources/names/#urns).
    """

    stack: str
    project: str
    qualified_type: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Urn:
        """Split a URN; raise ValueError for text that is not one."""
        parts = text.removeprefix(URN_PREFIX).split("::", 3)
        if not text.startswith(URN_PREFIX) or len(parts) != 4:
            raise ValueError(f"not a Pulumi URN: {text!r}")
        return cls(*parts)

    @classmethod
    def of_child(cls, stack: str, project: str, parent: str, type_: str, name: str) -> Urn:
        """The URN the engine gives a resource of ``type_`` under ``parent`` (a URN, or "")."""
        if parent and type_ != STACK_TYPE:
            parent_type = cls.parse(parent).qualified_type
            if parent_type != STACK_TYPE:
                type_ = f"{parent_type}${type_}"
        return cls(stack, project, type_, name)

    @property
    def type(self) -> str:
        return self.qualified_type.split("$")[-1]

    @property
    def short(self) -> str:
        """``<type> <name>``, as reports show a resource."""
        return f"{self.type} {self.name}"

    def __str__(self) -> str:
        return f"{URN_PREFIX}{self.stack}::{self.project}::{self.qualified_type}::{self.name}"


def urn_type(text: str) -> str:
    """The resource type a URN names, or "" for text that is not a URN."""
    try:
        return Urn.parse(text).type
    except ValueError:
        return ""


def short(text: str) -> str:
    """``<type> <name>`` of a URN; other text as it is."""
    try:
        return Urn.parse(text).short
    except ValueError:
        return text


# -- wire markers --------------------------------------------------------------------------------

# Markers of the engine's wire format (sdk/python/lib/pulumi/runtime/rpc.py and
# sdk/go/common/resource/sig/sig.go in pulumi/pulumi): a special-value object carries SIG_KEY.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
UNKNOWN_VALUE = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def secret(value: Any) -> dict[str, Any]:
    """``value`` wrapped as the engine marks a secret."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def redact(value: Any) -> Any:  # noqa: PLR0911 - one return per wire-format case
    """Wire-format values as plan files hold them: secrets and unknowns as markers, whole
    numbers as ints, resource references as their URN."""
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG:
            return SECRET
        if sig == RESOURCE_SIG:
            return value.get("urn", "")
        if sig == OUTPUT_SIG:
            if value.get("secret"):
                return SECRET
            return redact(value["value"]) if "value" in value else UNKNOWN
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == UNKNOWN_VALUE:
        return UNKNOWN
    return value


# -- `pulumi preview --json` ---------------------------------------------------------------------

# Ops that leave a resource as it is; every other op is a change, and after a refresh a drift.
UNCHANGED_OPS = frozenset({"same", "read"})
NonEmpty = Annotated[str, Field(min_length=1)]


class _Json(BaseModel):
    # The engine adds fields between versions: unknown ones are ignored, known ones checked.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # The engine writes null for fields it has no value for.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ResourceState(_Json):
    """A step's ``newState`` or ``oldState``: the fields plan files carry."""

    urn: NonEmpty
    type: NonEmpty
    parent: str = ""
    protect: bool = False
    custom: bool = False
    provider: str = ""
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    dependencies: list[str] = []


class Step(_Json):
    """One step of a preview: what the engine would do to one resource."""

    op: NonEmpty
    urn: NonEmpty
    new_state: ResourceState | None = Field(None, alias="newState")
    old_state: ResourceState | None = Field(None, alias="oldState")
    detailed_diff: dict[str, Any] | None = Field(None, alias="detailedDiff")
    diff_reasons: list[str] | None = Field(None, alias="diffReasons")
    replace_reasons: list[str] | None = Field(None, alias="replaceReasons")

    @property
    def keys(self) -> list[str]:
        """The property keys the step changes: detailedDiff's, diffReasons and replaceReasons."""
        found = [
            *(self.detailed_diff or {}),
            *(self.diff_reasons or []),
            *(self.replace_reasons or []),
        ]
        return sorted(set(found))

    @property
    def type(self) -> str:
        state = self.new_state or self.old_state
        return state.type if state is not None else urn_type(self.urn)

    @property
    def name(self) -> str:
        return self.urn.split("::")[-1]

    @property
    def changed(self) -> bool:
        return self.op not in UNCHANGED_OPS


class Preview(_Json):
    steps: list[Step]


def parse_preview(data: object, source: Path | str) -> Preview:
    """Decoded ``pulumi preview --json``; raise PlanError naming the first bad key."""
    if not isinstance(data, dict):
        raise PlanError(source, None, "not a `pulumi preview --json` object")
    try:
        return Preview.model_validate(data)
    except ValidationError as exc:
        raise first_error(exc, source, PlanError) from None


def decode(text: str, source: Path | str) -> object:
    """Decode preview JSON text, or raise PlanError naming the source."""
    if not text.strip():
        raise PlanError(source, None, "empty: no `pulumi preview --json` output")
    return decode_json(text, source, PlanError)


def read_preview(path: Path) -> Preview:
    """A saved ``pulumi preview --json`` file."""
    return parse_preview(decode(read_text(path, PlanError), path), path)
