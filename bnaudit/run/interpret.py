"""Interpret a run: activation differences, divergence findings, the first divergent layer.

A layer diverges when its max abs difference exceeds `atol` AND its max relative difference
exceeds `rtol`. The first divergent layer in graph order is the one to fix first: every layer
after it sees inputs that already differ. A divergence is explained by the layer's own static
finding, else by the earlier divergent layer it inherits from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.findings import Code, finding
from bnaudit.report.results import (
    ActivationDiff,
    CompareReport,
    LayerComparison,
    OutputComparison,
)
from bnaudit.run.plan import RunPlan, true_flags

_BLOCK = 1 << 22  # elements reduced at a time, so float64 copies stay small
# Static findings that explain a divergence, most telling first.
_CAUSES: tuple[Code, ...] = (
    "training-mode",
    "stats-mismatch",
    "folded-mismatch",
    "missing-in-checkpoint",
    "nonfinite-stats",
    "negative-variance",
    "conditional-mode",
    "unmatched",
)


def activation_diff(
    ours: NDArray[Any], theirs: NDArray[Any], atol: float, rtol: float
) -> ActivationDiff:
    """Compare two tensors in float64, block by block; NaN against NaN counts as equal.

    Values near float64's limit give infinite differences, never warnings, and the cosine
    is computed on rescaled values when the plain sums overflow.
    """
    if ours.shape != theirs.shape:
        return ActivationDiff(np.inf, np.inf, np.inf, float("nan"), True)
    a, b = ours.reshape(-1), theirs.reshape(-1)
    max_abs = max_rel = total = dot = norm_a = norm_b = 0.0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for start in range(0, a.size, _BLOCK):
            block = _block_stats(a[start : start + _BLOCK], b[start : start + _BLOCK])
            max_abs, max_rel = max(max_abs, block[0]), max(max_rel, block[1])
            total, dot = total + block[2], dot + block[3]
            norm_a, norm_b = norm_a + block[4], norm_b + block[5]
        if not np.isfinite([dot, norm_a, norm_b]).all():
            dot, norm_a, norm_b = _rescaled_products(a, b)
    if norm_a == 0 and norm_b == 0:
        cosine = 1.0
    elif norm_a == 0 or norm_b == 0:
        cosine = 0.0
    else:
        cosine = dot / (np.sqrt(norm_a) * np.sqrt(norm_b))
    mean_abs = total / a.size if a.size else 0.0
    return ActivationDiff(max_abs, max_rel, mean_abs, cosine, max_abs > atol and max_rel > rtol)


def _block_stats(
    ours: NDArray[Any], theirs: NDArray[Any]
) -> tuple[float, float, float, float, float, float]:
    """Max abs and relative difference, summed abs difference, x.y, x.x, y.y of one block."""
    x, y = ours.astype(np.float64), theirs.astype(np.float64)
    if _all_finite(ours) and _all_finite(theirs):
        # The usual case, in fewer passes and the same numbers: no NaN, nothing to mask.
        delta = np.subtract(x, y)
        np.abs(delta, out=delta)
        relative = np.abs(y)
        np.maximum(relative, 1e-12, out=relative)
        np.divide(delta, relative, out=relative)
        products = (float(np.dot(x, y)), float(np.dot(x, x)), float(np.dot(y, y)))
        return (float(delta.max()), float(relative.max()), float(delta.sum()), *products)
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    delta = np.where(same, 0.0, np.abs(x - y))
    delta[np.isnan(delta)] = np.inf
    relative = np.where(delta == 0, 0.0, delta / np.maximum(np.abs(y), 1e-12))
    relative[np.isnan(relative)] = np.inf
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    products = (float(np.dot(x, y)), float(np.dot(x, x)), float(np.dot(y, y)))
    return (float(delta.max()), float(relative.max()), float(delta.sum()), *products)


def _rescaled_products(a: NDArray[Any], b: NDArray[Any]) -> tuple[float, float, float]:
    """x.y, x.x and y.y over the finite pairs, each side divided by its largest magnitude:
    the cosine they give is the same, and the sums no longer overflow."""
    finite = np.isfinite(a) & np.isfinite(b)
    x, y = a[finite].astype(np.float64), b[finite].astype(np.float64)
    scale_x = float(np.abs(x).max()) if x.size else 1.0
    scale_y = float(np.abs(y).max()) if y.size else 1.0
    x, y = x / (scale_x or 1.0), y / (scale_y or 1.0)
    return float(np.dot(x, y)), float(np.dot(x, x)), float(np.dot(y, y))


def _all_finite(values: NDArray[Any]) -> bool:
    """No NaN and no infinity (min and max propagate both), without a boolean array."""
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))


def interpret(
    report: CompareReport, plan: RunPlan, diffs: dict[str, ActivationDiff]
) -> CompareReport:
    """The static report with each compared layer's activation difference and its findings.

    `diffs` maps the frozen graph's node names to their difference; what is missing there
    had no counterpart in the reference, and a note says so.
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
    rows, first = _with_activations(report.layers, diffs, true_flags(plan.inputs))
    findings = list(report.findings)
    compared = tuple(OutputComparison(name, diffs[name]) for name in plan.outputs if name in diffs)
    divergent_outputs = [o.name for o in compared if o.activation.divergent]
    if divergent_outputs and first is None:
        findings.append(
            finding(
                "activation-divergence",
                f"the final output {', '.join(divergent_outputs)} differs from the reference "
                "while no BN layer does: something outside BN (random ops, or a folded BN the "
                "reference keeps) changes the result",
                fix="",
            )
        )
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


def _with_activations(
    rows: tuple[LayerComparison, ...], diffs: dict[str, ActivationDiff], true_flags: set[str]
) -> tuple[list[LayerComparison], str | None]:
    first: str | None = None
    out = []
    for row in rows:
        diff = diffs.get(row.name)
        if diff is None:
            out.append(row)
            continue
        findings = list(row.findings)
        if diff.divergent:
            cause = _cause(row, true_flags, first)
            findings.append(
                finding(
                    "activation-divergence",
                    "the layer's output differs from what this checkpoint gives (beyond --atol "
                    "and --rtol)",
                    row.scope,
                    fix=cause,
                )
            )
            first = first or row.scope
        out.append(dataclasses.replace(row, activation=diff, findings=tuple(findings)))
    return out, first


def _cause(row: LayerComparison, true_flags: set[str], first: str | None) -> str:
    by_code = {f.code: f for f in row.findings}
    for code in _CAUSES:
        if code == "conditional-mode" and code in by_code and true_flags:
            flags = ", ".join(sorted(true_flags))
            return (
                f"likely cause, conditional-mode: the frozen graph ran with {flags} fed True, "
                "so the layer normalized with the batch's statistics; feed False in inference"
            )
        if code in by_code and code != "conditional-mode":
            return f"likely cause, {code}: {by_code[code].message}"
    if first is not None:
        return f"its input already differs: fix the first divergent layer, {first}, first"
    return (
        "no static finding explains it: the graph computes something else between the "
        "checkpoint's layers (check the ops before it)"
    )
