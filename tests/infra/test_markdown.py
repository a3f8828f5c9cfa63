"""The one markdown-table helper: every cell escaped, so no value can break a row."""

from __future__ import annotations

from infra.markdown import cell, table
from infra.plans.judge.drift import DriftReport, summary_markdown


def test_cells_escape_pipes_and_stay_on_one_line() -> None:
    assert cell("a | b") == "a \\| b"
    assert cell("first line\nsecond   line") == "first line second line"
    assert cell("x" * 10, limit=6) == "xxx..."
    assert cell(3) == "3"


def test_table_aligns_numeric_columns() -> None:
    lines = table(["Stack", "Monthly"], [["dev-aws", "1.00"], ["a|b", 2], ["", ""]], right={1})
    assert lines == [
        "| Stack | Monthly |",
        "|---|---:|",
        "| dev-aws | 1.00 |",
        "| a\\|b | 2 |",
        "| | |",
    ]


def test_an_error_with_a_pipe_keeps_the_drift_summary_a_two_column_table() -> None:
    text = summary_markdown([DriftReport("dev-aws", [], error="exit 1 | see log\nline two")])
    row = text.splitlines()[-1]
    assert row == "| dev-aws | error: exit 1 \\| see log line two |"
    assert row.replace("\\|", "").count("|") == 3
