"""Markdown tables for reports, PR bodies and drift issues: one helper that escapes every cell.

A ``|`` inside a cell (a message, a URN, a reason) ends the cell in GitHub's table syntax, even
inside a code span, unless it is escaped; a line break ends the row
(https://github.github.com/gfm/#tables-extension-).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence


def cell(value: object, limit: int | None = None) -> str:
    """A value as one table cell: on one line, ``|`` escaped, at most ``limit`` characters."""
    flat = " ".join(str(value).split()).replace("|", "\\|")
    if limit is not None and len(flat) > limit:
        return flat[: limit - 3] + "..."
    return flat


def row(cells: Iterable[object]) -> str:
    """One table row; an empty cell is ``| |``."""
    return "|" + "|".join(f" {text} " if text else " " for text in map(cell, cells)) + "|"


def table(
    header: Sequence[str], rows: Iterable[Iterable[object]], *, right: Collection[int] = ()
) -> list[str]:
    """The lines of a table; ``right`` holds the indexes of right-aligned (numeric) columns."""
    rule = "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"
    return [row(header), rule, *(row(r) for r in rows)]
