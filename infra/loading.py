"""Files into pydantic models: the first problem becomes one error naming the file and the key.

Settings, service manifests, the price file, plan files and ``pulumi preview --json`` output are
all read through here, so every bad input reads the same way:
``environments/dev/settings.toml: key 'aws.vpc_cidr': not a valid CIDR block``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from infra.errors import InfraError

Model = TypeVar("Model", bound=BaseModel)
Error = TypeVar("Error", bound=InfraError)


def key_of(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as a key path: ``services.api.min_tasks``, ``steps[0].urn``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key or None


def describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as a short message."""
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return str(error["msg"]).removeprefix("Value error, ")


def first_error(
    exc: ValidationError, file: Path | str, error: type[Error], *, prefix: Sequence[str] = ()
) -> Error:
    """The first validation error of ``file`` as ``error``, naming its key (under ``prefix``)."""
    first = exc.errors(include_url=False)[0]
    return error(file, key_of([*prefix, *first["loc"]]), describe(first))


def read_toml(path: Path, error: type[Error]) -> dict[str, Any]:
    """A TOML file's table, or ``error`` naming the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise error(path, None, "file is missing") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(path, None, f"invalid TOML: {exc}") from None


def load_toml_model(path: Path, model: type[Model], error: type[Error]) -> Model:
    """Read and validate one TOML file as ``model``, or raise ``error`` naming the file and key."""
    try:
        return model.model_validate(read_toml(path, error))
    except ValidationError as exc:
        raise first_error(exc, path, error) from None


def read_text(path: Path, error: type[Error]) -> str:
    """A UTF-8 file's text, or ``error`` naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(path, None, f"cannot read: {exc}") from None


def decode_json(text: str, source: Path | str, error: type[Error]) -> object:
    """Decoded JSON, or ``error`` naming the source."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(source, None, f"malformed JSON: {exc}") from None
