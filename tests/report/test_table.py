"""The rich table: golden output, styled rows, divergent rows in bold red."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from sample_reports import divergent_compare_report, list_report, static_compare_report

from bnaudit.report.table import render_table

GOLDEN = Path(__file__).parent / "golden"


def _render(report: object, color: bool = False) -> str:
    console = Console(file=io.StringIO(), width=100, color_system="truecolor" if color else None)
    console.print(render_table(report))  # type: ignore[arg-type]
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


def test_table_matches_golden() -> None:
    assert _render(list_report()) == (GOLDEN / "list_table.txt").read_text()


def test_static_compare_table_styles_the_failing_row() -> None:
    output = _render(static_compare_report(), color=True)
    assert "missing γ" in output and "\x1b[" in output  # the row is styled


def test_divergent_row_is_bold_red_and_the_clean_row_is_not() -> None:
    lines = _render(divergent_compare_report(), color=True).splitlines()
    bn1 = next(line for line in lines if "bn1" in line and "exact" in line)
    bn2 = next(line for line in lines if "bn2" in line and "exact" in line)
    assert "\x1b[1;31mbn1" in bn1 and "\x1b[1;31mexact" in bn1  # the whole row: bold red
    assert "\x1b[1;31m" not in bn2
    plain = _render(divergent_compare_report())
    assert "first divergent layer: bn1; the static audit says: stats-mismatch" in plain
    assert "act |Δ|" in plain and "own |Δ|" in plain and "0.375" in plain
