"""Interpret a run: activation differences, divergence findings, the first divergent layer.

A tensor diverges when its max abs difference exceeds `atol` AND its max relative difference
exceeds `rtol`. A layer is `activation-divergence` when it changes the result itself: its own
difference (the frozen layer applied to the reference's input, see `run.contribution`)
diverges; where that is not measured, when a static finding explains its divergence or no
earlier layer diverged. A layer that only passes on a difference is `inherited-divergence`
(info). The first layer that changes the result, in graph order, is the one to fix first.
"""

from __future__ import annotations

import dataclasses

from bnaudit.findings import Code, Finding, finding
from bnaudit.report.cells import fmt
from bnaudit.report.results import (
    ActivationDiff,
    CompareReport,
    LayerComparison,
    OutputComparison,
)
from bnaudit.run.plan import RunPlan, true_flags

# Static findings that explain a divergence, most telling first.
_CAUSES: tuple[Code, ...] = (
    "training-mode",
    "stats-mismatch",
    "shape-mismatch",
    "folded-mismatch",
    "missing-in-checkpoint",
    "nonfinite-stats",
    "negative-variance",
    "unmatched",
)


def interpret(
    report: CompareReport,
    plan: RunPlan,
    diffs: dict[str, ActivationDiff],
    own: dict[str, ActivationDiff] | None = None,
) -> CompareReport:
    """The static report with each compared layer's activation difference and its findings.

    `diffs` maps the frozen graph's node names to their difference, `own` to the difference
    the layer makes itself (see `run.contribution`); what is missing in `diffs` had no
    counterpart in the reference, and a note says so.
    """
    kind = plan.choice.kind
    notes = [
        f"{row.scope}: the {kind} reference has no counterpart of this layer; its "
        "activation is not compared"
        for row in plan.rows
        if row.name not in diffs
    ]
    notes += [
        f"output {name}: the {kind} reference has no counterpart; it is not compared"
        for name in plan.outputs
        if name not in diffs
    ]
    fed = true_flags(plan.inputs)
    fed_true = {row: flag for row, flag in plan.flags.items() if flag in fed}
    rows, first = _with_activations(report.layers, diffs, own or {}, fed_true)
    findings = list(report.findings)
    compared = tuple(OutputComparison(name, diffs[name]) for name in plan.outputs if name in diffs)
    divergent_outputs = [o.name for o in compared if o.activation.divergent]
    if divergent_outputs and first is None:
        findings.append(_outside_bn(divergent_outputs, plan, diffs))
    return dataclasses.replace(
        report,
        layers=tuple(rows),
        findings=tuple(findings),
        notes=(
            *report.notes,
            f"reference: {kind} ({plan.choice.reason})",
            *plan.notes,
            *notes,
            *plan.inputs.warnings,
        ),
        first_divergent_layer=first,
        reference=kind,
        reference_reason=plan.choice.reason,
        outputs=compared,
    )


def _outside_bn(outputs: list[str], plan: RunPlan, diffs: dict[str, ActivationDiff]) -> Finding:
    """A final output differs while no compared BN layer does: say what may explain it."""
    unseen = len(plan.rows) - sum(row.name in diffs for row in plan.rows)
    cause = (
        f"while no compared BN layer does; {unseen} BN layer(s) the reference has no "
        "counterpart of were not compared, and their static findings may explain it"
        if unseen
        else "while no BN layer does: something outside BN (random ops, or a folded BN "
        "the reference keeps) changes the result"
    )
    return finding(
        "activation-divergence",
        f"the final output {', '.join(outputs)} differs from the reference {cause}",
        fix="",
    )


def _with_activations(
    rows: tuple[LayerComparison, ...],
    diffs: dict[str, ActivationDiff],
    own: dict[str, ActivationDiff],
    fed_true: dict[str, str],
) -> tuple[list[LayerComparison], str | None]:
    """Each row with its differences; `activation-divergence` where the layer itself changes
    the result, `inherited-divergence` where it only passes on a difference it was given."""
    first: str | None = None
    first_index = -1
    inheriting = 0
    out = []
    for row in rows:
        diff = diffs.get(row.name)
        if diff is None:
            out.append(row)
            continue
        mine = own.get(row.name)
        cause = _static_cause(row, fed_true.get(row.name))
        if mine is not None:
            changes = mine.divergent
        else:  # not measured: a static cause, or nothing earlier to inherit from
            changes = diff.divergent and (cause is not None or first is None)
        findings = list(row.findings)
        if changes:
            findings.append(_changes_finding(row, mine, cause))
            if first is None:
                first, first_index = row.scope, len(out)
        elif diff.divergent:
            inheriting += first is not None
            findings.append(_inherits_finding(row, diff, mine, first))
        out.append(
            dataclasses.replace(row, activation=diff, own_activation=mine, findings=tuple(findings))
        )
    if first is not None and inheriting:
        out[first_index] = _with_inheritors(out[first_index], inheriting)
    return out, first


def _changes_finding(
    row: LayerComparison, mine: ActivationDiff | None, cause: str | None
) -> Finding:
    measured = "" if mine is None else f", by {fmt(mine.max_abs_diff)} on the reference's input"
    return finding(
        "activation-divergence",
        "the layer itself changes the result: its output differs from what this checkpoint "
        f"gives (beyond --atol and --rtol){measured}",
        row.scope,
        fix=cause or _UNEXPLAINED,
    )


def _inherits_finding(
    row: LayerComparison, diff: ActivationDiff, mine: ActivationDiff | None, first: str | None
) -> Finding:
    own = (
        "its own contribution is not measured"
        if mine is None
        else "on the reference's input it gives the reference's output (max |Δ| "
        f"{fmt(mine.max_abs_diff)})"
    )
    return finding(
        "inherited-divergence",
        f"its input already differs (output max |Δ| {fmt(diff.max_abs_diff)}); {own}",
        row.scope,
        fix=f"fix the first divergent layer, {first}" if first else "",
    )


def _with_inheritors(row: LayerComparison, count: int) -> LayerComparison:
    """The first divergent layer's finding, saying how many later layers inherit from it."""
    said = f"{count} later layer{'s' if count > 1 else ''} inherit{'' if count > 1 else 's'} it"
    findings = tuple(
        dataclasses.replace(f, message=f"{f.message} ({said})")
        if f.code == "activation-divergence"
        else f
        for f in row.findings
    )
    return dataclasses.replace(row, findings=findings)


_UNEXPLAINED = (
    "no static finding explains it: the graph computes something else between the "
    "checkpoint's layers (check the ops before it)"
)


def _static_cause(row: LayerComparison, fed_flag: str | None) -> str | None:
    """Why the layer itself changes the result, from what the static audit and the feeds say."""
    if fed_flag is not None:
        return (
            f"likely cause, your --feed: {fed_flag} fed True, so the layer normalized with "
            "the batch's statistics; feed it False for inference"
        )
    by_code = {f.code: f for f in row.findings}
    for code in _CAUSES:
        if code in by_code and code != "conditional-mode":
            return f"likely cause, {code}: {by_code[code].message}"
    return None
