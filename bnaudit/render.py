"""Pure renderers: a report in, text or a rich renderable out. Adding a format is one function."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from bnaudit.report import (
    CompareReport,
    Finding,
    LayerComparison,
    LayerReport,
    ListReport,
    compare_report_dict,
    list_report_dict,
    passes,
)

Report = ListReport | CompareReport

STATUS_STYLE = {"error": "bold red", "warning": "yellow", "ok": "green"}
ROLES = ("gamma", "beta", "moving_mean", "moving_variance")


def render_json(report: Report) -> str:
    data = (
        list_report_dict(report) if isinstance(report, ListReport) else compare_report_dict(report)
    )
    return json.dumps(data, indent=2) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _range(layer: LayerReport, role: str) -> str:
    param = layer.params[role]
    if param.kind != "const":
        return param.source if param.kind != "other" else "?"
    if param.min is None:
        return "non-finite"
    return f"{_fmt(param.min)}..{_fmt(param.max)}"


def _mode(layer: LayerReport) -> str:
    if layer.flag is None:
        return layer.mode
    default = {True: "True", False: "False", None: "no default"}[layer.flag.default]
    return f"{layer.mode}\n{layer.flag.name}={default}"


_MIN_WIDTH = {"mode": 11, "status": 7}


def _row_style(status: str) -> str | None:
    return {"error": "red", "warning": "yellow"}.get(status)


def summary_line(report: Report) -> str:
    """One line for stderr: how many layers, findings by severity, pass or fail."""
    counts = Counter(f.severity.label for f in report.all_findings)
    parts = [
        f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in ("error", "warning") if counts[s]
    ]
    verdict = "passed" if report.passed else "failed"
    found = f"{len(report.layers)} BN layer{'s' if len(report.layers) != 1 else ''}"
    return f"{found}, {', '.join(parts) or 'no problems'}: {verdict}"


def build_table(report: ListReport) -> Table:
    """One row per layer: form, mode, statistics ranges, status."""
    table = Table(title=f"BN layers in {report.graph}", title_justify="left")
    widest = max((len(layer.scope) for layer in report.layers), default=5)
    table.add_column("layer", overflow="fold", min_width=min(widest, 24))
    for column in ("op", "mode", "moving mean", "moving var", "status"):
        table.add_column(column, overflow="fold", min_width=_MIN_WIDTH.get(column))
    for layer in report.layers:
        table.add_row(
            layer.scope,
            layer.op,
            _mode(layer),
            _range(layer, "moving_mean"),
            _range(layer, "moving_variance"),
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
            layer.scope,
            _fmt(layer.epsilon),
            "-" if layer.channels is None else str(layer.channels),
            layer.data_format or "-",
            *(layer.params[role].source for role in ROLES),
        )
    return table


def grouped_findings(findings: list[Finding]) -> list[tuple[Finding, list[str]]]:
    """Findings with the same code and message once each, with the layers they concern."""
    groups: dict[tuple[str, str], tuple[Finding, list[str]]] = {}
    for finding in findings:
        key = (finding.code, finding.message)
        groups.setdefault(key, (finding, []))[1].append(finding.layer or "graph")
    return sorted(groups.values(), key=lambda group: -group[0].severity)


def _finding_lines(findings: list[Finding]) -> list[Text]:
    lines = []
    for finding, where in grouped_findings(findings):
        label = finding.severity.label
        line = Text(f"{label:<8}", style=STATUS_STYLE.get(label, "cyan"))
        line.append(f"{finding.code}", style="bold")
        places = ", ".join(where) if len(where) <= 3 else f"{len(where)} layers"
        line.append(f" ({places}): {finding.message}")
        lines.append(line)
    return lines


def render_table(report: Report) -> RenderableType:
    parts: list[RenderableType] = []
    if isinstance(report, ListReport) and report.layers:
        parts += [build_table(report), build_details_table(report)]
    elif isinstance(report, CompareReport) and report.layers:
        parts.append(build_compare_table(report))
    parts.extend(_finding_lines(report.all_findings))
    return Group(*parts)


DIFF_COLUMNS = {"moving_mean": "Δ mean", "moving_variance": "Δ var", "gamma": "Δ γ", "beta": "Δ β"}


def _diff_cell(layer: LayerComparison, role: str) -> str:
    diff = layer.stats.get(role)
    if diff is None:
        return ""
    return "missing" if diff.max_abs_diff is None else _fmt(diff.max_abs_diff)


def _match(layer: LayerComparison) -> str:
    if layer.match_method is None:
        return "unmatched"
    if layer.checkpoint_scope in (None, layer.scope):
        return layer.match_method
    return f"{layer.match_method}: {layer.checkpoint_scope}"


def build_compare_table(report: CompareReport) -> Table:
    """One row per layer: mode, how it was paired, max |diff| per parameter, status."""
    table = Table(title=f"{report.graph} against {report.checkpoint}", title_justify="left")
    widest = max((len(layer.scope) for layer in report.layers), default=5)
    table.add_column("layer", overflow="fold", min_width=min(widest, 24))
    for column in ("mode", "matched", *DIFF_COLUMNS.values(), "status"):
        table.add_column(column, overflow="fold", min_width=_MIN_WIDTH.get(column))
    for layer in report.layers:
        fold = layer.stats.get("folded")
        diffs = [_diff_cell(layer, role) for role in DIFF_COLUMNS]
        if fold is not None:
            diffs = [f"fold {_fmt(fold.max_abs_diff)}", "", "", ""]
        table.add_row(
            layer.scope,
            layer.mode,
            _match(layer),
            *diffs,
            Text(layer.status, style=STATUS_STYLE[layer.status]),
            style=_row_style(layer.status),
        )
    return table


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_markdown(report: Report) -> str:
    """A job summary for CI: verdict, one table row per layer, findings said once each."""
    if isinstance(report, CompareReport):
        title = f"## bnaudit compare: `{report.graph}` against `{report.checkpoint}`"
    else:
        title = f"## bnaudit list-bn: `{report.graph}`"
    lines = [title, ""]
    lines.append(f"**{'Passed' if report.passed else 'Failed'}**: {summary_line(report)}")
    lines.append("")
    if isinstance(report, CompareReport) and report.layers:
        headers = ["layer", "mode", "matched", *DIFF_COLUMNS.values(), "status"]
        lines += [_md_row(headers), _md_row(["---"] * len(headers))]
        for row in report.layers:
            cells = [f"`{row.scope}`", row.mode, _match(row)]
            cells += [_diff_cell(row, role) or "-" for role in DIFF_COLUMNS] + [row.status]
            lines.append(_md_row(cells))
        lines.append("")
    if isinstance(report, ListReport) and report.layers:
        lines.append("| # | layer | op | mode | eps | C | mean | variance | status |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for index, layer in enumerate(report.layers, 1):
            cells = [
                str(index),
                f"`{layer.scope}`",
                layer.op if layer.data_format is None else f"{layer.op} {layer.data_format}",
                _mode(layer).replace("\n", " "),
                _fmt(layer.epsilon),
                "-" if layer.channels is None else str(layer.channels),
                _range(layer, "moving_mean"),
                _range(layer, "moving_variance"),
                layer.status,
            ]
            lines.append(_md_row(cells))
        lines.append("")
    for finding, where in grouped_findings(report.all_findings):
        places = ", ".join(f"`{w}`" for w in where)
        lines.append(
            f"- **{finding.severity.label}** `{finding.code}` ({places}): {finding.message}"
        )
    return "\n".join(lines) + "\n"


def render_junit(report: Report) -> str:
    """JUnit XML: one test case per BN layer (and one for the graph), failing at --fail-on."""
    suite = ET.Element("testsuite", name=f"bnaudit {report.command}")
    cases = [(layer.scope, list(layer.findings)) for layer in report.layers]
    cases.append(("graph", list(report.findings)))
    failures = 0
    for name, findings in cases:
        case = ET.SubElement(suite, "testcase", classname=report.graph, name=name)
        if not passes(findings, report.fail_on):
            failures += 1
            failure = ET.SubElement(
                case, "failure", message=", ".join(sorted({f.code for f in findings}))
            )
            failure.text = "\n".join(f"{f.severity.label} {f.code}: {f.message}" for f in findings)
        elif findings:
            ET.SubElement(case, "system-out").text = "\n".join(
                f"{f.severity.label} {f.code}: {f.message}" for f in findings
            )
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


# Name -> renderer; also feeds click.Choice. A renderer returns text or a rich renderable.
REPORTERS: dict[str, Callable[[Any], RenderableType | str]] = {
    "table": render_table,
    "json": render_json,
    "markdown": render_markdown,
    "junit": render_junit,
}
