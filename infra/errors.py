"""The one error type of every command, and the exit codes every command ends with.

Bad input (a malformed environment file, plan or preview, an unknown environment, a git ref that
does not exist) and failed steps end as one :class:`InfraError`: one line naming the file and the
key when there is one. ``python -m infra`` catches this type alone. Nothing here imports more
than the standard library, so commands that render nothing stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import overload

EXIT_OK = 0
EXIT_ERROR = 1  # an error, or a mandatory check failed
EXIT_DRIFT = 2  # drift found (the drift command only)

REPO_ROOT = Path(__file__).resolve().parent.parent


def display_path(file: Path | str) -> str:
    """A file as a person in the repository would type it: relative to the root when inside."""
    path = Path(file)
    if path.is_absolute() and path.is_relative_to(REPO_ROOT):
        return str(path.relative_to(REPO_ROOT))
    return str(file)


class InfraError(Exception):
    """Bad input or a failed step: ``<file>: key '<key>': <message>``, file and key when known."""

    file: str | None
    key: str | None
    message: str

    @overload
    def __init__(self, message: str, /) -> None: ...
    @overload
    def __init__(self, file: Path | str | None, key: str | None, message: str, /) -> None: ...
    def __init__(self, *args: Path | str | None) -> None:
        if len(args) == 1:
            file, key, message = None, None, args[0]
        elif len(args) == 3:
            file, key, message = args
        else:
            raise TypeError("InfraError(message) or InfraError(file, key, message)")
        self.file = None if file is None else display_path(file)
        self.key = None if key is None else str(key)
        self.message = str(message)
        where = [part for part in (self.file, f"key '{key}'" if key else None) if part]
        super().__init__(": ".join([*where, self.message]))
