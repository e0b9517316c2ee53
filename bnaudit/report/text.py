"""Pure text renderers: a report in, a string out (JSON, Markdown, JUnit XML)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from bnaudit.findings import passes
from bnaudit.report.cells import (
    ACTIVATION_COLUMNS,
    DIFF_COLUMNS,
    Report,
    activation_cells,
    diff_cell,
    divergent,
    first_divergence,
    fmt,
    grouped_findings,
    match_label,
    mode_label,
    outputs_line,
    ran_activations,
    stat_range,
    summary_line,
    visible,
)
from bnaudit.report.contract import compare_report_dict, list_report_dict
from bnaudit.report.results import CompareReport, ListReport


def render_json(report: Report) -> str:
    data = (
        list_report_dict(report) if isinstance(report, ListReport) else compare_report_dict(report)
    )
    return json.dumps(data, indent=2) + "\n"


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
        ran = ran_activations(report)
        headers = ["layer", "mode", "matched", *DIFF_COLUMNS.values()]
        headers += [*ACTIVATION_COLUMNS, "status"] if ran else ["status"]
        lines += [_md_row(headers), _md_row(["---"] * len(headers))]
        for row in report.layers:
            cells = [f"`{row.scope}`", row.mode, match_label(row)]
            cells += [diff_cell(row, role) or "-" for role in DIFF_COLUMNS]
            if ran:
                cells += [c or "-" for c in activation_cells(row)]
            cells.append(row.status)
            if divergent(row):
                cells = [f"**{c}**" for c in cells]
            lines.append(_md_row(cells))
        lines.append("")
        for line in (first_divergence(report), outputs_line(report)):
            if line is not None:
                lines += [line, ""]
    if isinstance(report, ListReport) and report.layers:
        lines.append("| # | layer | op | mode | eps | C | mean | variance | status |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for index, layer in enumerate(report.layers, 1):
            cells = [
                str(index),
                f"`{layer.scope}`",
                layer.op if layer.data_format is None else f"{layer.op} {layer.data_format}",
                mode_label(layer).replace("\n", " "),
                fmt(layer.epsilon),
                "-" if layer.channels is None else str(layer.channels),
                stat_range(layer, "moving_mean"),
                stat_range(layer, "moving_variance"),
                layer.status,
            ]
            lines.append(_md_row(cells))
        lines.append("")
    for finding, where in grouped_findings(report.all_findings):
        places = ", ".join(f"`{w}`" for w in where)
        lines.append(
            f"- **{finding.severity.label}** `{finding.code}` ({places}): {finding.message}"
        )
    return visible("\n".join(lines)) + "\n"


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
    # Names come from the model: escaped, they cannot make the XML invalid.
    return visible(ET.tostring(suite, encoding="unicode", xml_declaration=True)) + "\n"
