"""The terminal table: rich renderables built from a report, and nothing else."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from bnaudit.findings import Finding
from bnaudit.report.cells import (
    ACTIVATION_COLUMNS,
    Report,
    activation_cells,
    divergent,
    first_divergence,
    fmt,
    grouped_findings,
    match_label,
    mode_label,
    outputs_line,
    ran_activations,
    stat_range,
    stats_cell,
    visible,
)
from bnaudit.report.results import CompareReport, ListReport
from bnaudit.vocab import ROLES

STATUS_STYLE = {"error": "bold red", "warning": "yellow", "ok": "green"}


def _cells(*values: str) -> list[Text]:
    """Cells as plain text: names come from the model, and rich must not read `[...]` in
    them as markup."""
    return [Text(visible(value)) for value in values]


def _row_style(status: str) -> str | None:
    return {"error": "red", "warning": "yellow"}.get(status)


def build_table(report: ListReport) -> Table:
    """One row per layer: form, mode, statistics ranges, status."""
    table = Table(title=Text(visible(f"BN layers in {report.graph}")), title_justify="left")
    table.add_column("layer", overflow="fold", ratio=2)
    for column in ("op", "mode", "moving mean", "moving var", "status"):
        table.add_column(column, overflow="fold", ratio=1)
    for layer in report.layers:
        table.add_row(
            *_cells(
                layer.scope,
                layer.op,
                mode_label(layer),
                stat_range(layer, "moving_mean"),
                stat_range(layer, "moving_variance"),
            ),
            Text(layer.status, style=STATUS_STYLE[layer.status]),
            style=_row_style(layer.status),
        )
    return table


def build_details_table(report: ListReport) -> Table:
    """Epsilon, channels, format, and where each parameter comes from."""
    table = Table(title="Layer details and parameter sources", title_justify="left")
    for column in ("layer", "eps", "C", "format", *ROLES):
        table.add_column(column, overflow="fold")
    for layer in report.layers:
        table.add_row(
            *_cells(
                layer.scope,
                fmt(layer.epsilon),
                "-" if layer.channels is None else str(layer.channels),
                layer.data_format or "-",
                *(layer.params[role].source for role in ROLES),
            )
        )
    return table


def _finding_lines(findings: list[Finding]) -> list[Text]:
    lines = []
    for finding, where in grouped_findings(findings):
        label = finding.severity.label
        line = Text(f"{label:<8}", style=STATUS_STYLE.get(label, "cyan"))
        line.append(f"{finding.code}", style="bold")
        places = ", ".join(where) if len(where) <= 3 else f"{len(where)} layers"
        line.append(visible(f" ({places}): {finding.message}"))
        lines.append(line)
    return lines


def render_table(report: Report) -> RenderableType:
    parts: list[RenderableType] = []
    if isinstance(report, ListReport) and report.layers:
        parts += [build_table(report), build_details_table(report)]
    elif isinstance(report, CompareReport) and report.layers:
        parts.append(build_compare_table(report))
    parts.extend(_finding_lines(report.all_findings))
    if isinstance(report, CompareReport):
        first = first_divergence(report)
        if first is not None:
            parts.append(Text(visible(first), style="bold red"))
        outputs = outputs_line(report)
        if outputs is not None:
            parts.append(Text(visible(outputs)))
    return Group(*parts)


def build_compare_table(report: CompareReport) -> Table:
    """One row per layer: mode, pairing, largest parameter difference, activations, status.

    Layers whose activations diverge are drawn in bold red.
    """
    table = Table(
        title=Text(visible(f"{report.graph} against {report.checkpoint}")), title_justify="left"
    )
    table.add_column("layer", overflow="fold", ratio=2)
    ran = ran_activations(report)
    columns = ("mode", "matched", "max Δ stat", *(ACTIVATION_COLUMNS if ran else ()))
    for column in (*columns, "status"):
        table.add_column(column, overflow="fold", ratio=1)
    for layer in report.layers:
        table.add_row(
            *_cells(
                layer.scope,
                layer.mode,
                match_label(layer),
                stats_cell(layer),
                *(activation_cells(layer) if ran else ()),
            ),
            Text(layer.status, style=STATUS_STYLE[layer.status]),
            style="bold red" if divergent(layer) else _row_style(layer.status),
        )
    return table
