"""Cells and lines shared by the renderers: how numbers, modes, pairings and findings read."""

from __future__ import annotations

from collections import Counter

from bnaudit.files import shown
from bnaudit.findings import Finding
from bnaudit.report.results import CompareReport, LayerComparison, LayerReport, ListReport
from bnaudit.vocab import Role

Report = ListReport | CompareReport


def visible(text: str) -> str:
    """`text` with every control character but newline and tab escaped (`\\x1b`): names
    come from the model, and a report must not clear a terminal or break an XML parser."""
    return "\n".join(
        "\t".join(shown(part) for part in line.split("\t")) for line in text.split("\n")
    )


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def stat_range(layer: LayerReport, role: Role) -> str:
    param = layer.params[role]
    if param.kind != "const":
        return {"other": "?", "variable": "variable"}.get(param.kind, param.source)
    if param.min is None:
        return "non-finite"
    return f"{fmt(param.min)} .. {fmt(param.max)}"


def mode_label(layer: LayerReport) -> str:
    if layer.flag is None:
        return layer.mode
    default = {True: "True", False: "False", None: "no default"}[layer.flag.default]
    return f"{layer.mode}\n{layer.flag.name}={default}"


DIFF_COLUMNS = {"moving_mean": "Δ mean", "moving_variance": "Δ var", "gamma": "Δ γ", "beta": "Δ β"}


def diff_cell(layer: LayerComparison, role: str) -> str:
    diff = layer.stats.get(role)
    if diff is None:
        return ""
    return "missing" if diff.max_abs_diff is None else fmt(diff.max_abs_diff)


def stats_cell(layer: LayerComparison) -> str:
    """The largest frozen-vs-checkpoint difference of a layer, with the parameter it is in."""
    fold = layer.stats.get("folded")
    if fold is not None:
        return f"fold {fmt(fold.max_abs_diff)}"
    missing = [DIFF_COLUMNS[r][2:] for r in DIFF_COLUMNS if diff_cell(layer, r) == "missing"]
    if missing:
        return "missing " + ", ".join(missing)
    diffs = {r: d.max_abs_diff for r, d in layer.stats.items() if d.max_abs_diff is not None}
    if not diffs:
        return "-"
    role = max(diffs, key=lambda r: diffs[r])
    return "0" if diffs[role] == 0 else f"{DIFF_COLUMNS[role][2:]} {fmt(diffs[role])}"


def match_label(layer: LayerComparison) -> str:
    if layer.match_method is None:
        return "unmatched"
    if layer.checkpoint_scope in (None, layer.scope):
        return layer.match_method
    return f"{layer.match_method}: {layer.checkpoint_scope}"


def summary_line(report: Report) -> str:
    """One line for stderr: how many layers, findings by severity, pass or fail."""
    counts = Counter(f.severity.label for f in report.all_findings)
    parts = [
        f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in ("error", "warning") if counts[s]
    ]
    verdict = "passed" if report.passed else "failed"
    found = f"{len(report.layers)} BN layer{'s' if len(report.layers) != 1 else ''}"
    if isinstance(report, CompareReport) and report.first_divergent_layer is not None:
        parts.append(f"first divergent layer {report.first_divergent_layer}")
    return f"{found}, {', '.join(parts) or 'no problems'}: {verdict}"


def first_divergence(report: CompareReport) -> str | None:
    """The first divergent layer and what the static audit says about it, in one line."""
    name = report.first_divergent_layer
    if name is None:
        return None
    row = next((r for r in report.layers if r.scope == name), None)
    codes = sorted(
        {f.code for f in row.findings if f.code != "activation-divergence"} if row else []
    )
    said = ", ".join(codes) if codes else "nothing (its constants match the checkpoint)"
    return f"first divergent layer: {name}; the static audit says: {said}"


ACTIVATION_COLUMNS = ("act |Δ|", "own |Δ|")


def ran_activations(report: CompareReport) -> bool:
    """True when the report holds a run's activation differences."""
    return any(layer.activation is not None for layer in report.layers)


def divergent(layer: LayerComparison) -> bool:
    return layer.activation is not None and layer.activation.divergent


def activation_cells(layer: LayerComparison) -> list[str]:
    """End to end, and what the layer does itself (see `run.contribution`)."""
    diff, own = layer.activation, layer.own_activation
    return [
        "" if diff is None else fmt(diff.max_abs_diff),
        "" if own is None else fmt(own.max_abs_diff),
    ]


def outputs_line(report: CompareReport) -> str | None:
    if not report.outputs:
        return None
    parts = [
        f"{o.name} max |Δ| {fmt(o.activation.max_abs_diff)}"
        + (" (diverges)" if o.activation.divergent else "")
        for o in report.outputs
    ]
    return f"final outputs against the {report.reference} reference: {', '.join(parts)}"


def grouped_findings(findings: list[Finding]) -> list[tuple[Finding, list[str]]]:
    """Findings with the same code and message once each, with the layers they concern."""
    groups: dict[tuple[str, str], tuple[Finding, list[str]]] = {}
    for finding in findings:
        key = (finding.code, finding.message)
        groups.setdefault(key, (finding, []))[1].append(finding.layer or "graph")
    return sorted(groups.values(), key=lambda group: -group[0].severity)
