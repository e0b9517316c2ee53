"""`compare` with a run: the same inputs through the frozen graph and the checkpoint's reference.

Each BN layer's output (and each final output) is compared between the two runs; a layer
diverges when its max abs difference exceeds `atol` AND its max relative difference exceeds
`rtol`. The first divergent layer in graph order is the one to fix first: every layer after
it sees inputs that already differ.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.compare import StaticAudit
from bnaudit.errors import BnauditError
from bnaudit.findings import Finding, Severity
from bnaudit.formats.tensors import shape_of
from bnaudit.model.graph import Graph
from bnaudit.names import normalize
from bnaudit.report.results import ActivationDiff, CompareReport, LayerComparison, OutputComparison
from bnaudit.run.inputs import InputOptions, Inputs, make_inputs, placeholders, save_arrays
from bnaudit.run.meta import MetaGraph, check_meta_safe, fetch_map
from bnaudit.run.patch import choose, patched_reference
from bnaudit.run.safety import check_safe

if TYPE_CHECKING:
    from bnaudit.run.execute import KerasSide, MetaSide, Side

_BLOCK = 1 << 22  # elements reduced at a time, so float64 copies stay small
# Ops that produce no tensor a user reads: never a final output.
_NOT_OUTPUTS = frozenset(
    {
        "NoOp", "Const", "Placeholder", "PlaceholderWithDefault", "Assert", "PrintV2",
        "Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "AssignAddVariableOp",
        "AssignSubVariableOp", "ControlTrigger", "SaveV2", "Save", "SaveSlices", "WriteFile",
    }
)  # fmt: skip
# Static findings that explain a divergence, most telling first.
_CAUSES = (
    "training-mode",
    "stats-mismatch",
    "folded-mismatch",
    "missing-in-checkpoint",
    "nonfinite-stats",
    "negative-variance",
    "conditional-mode",
    "unmatched",
)


@dataclass(frozen=True)
class RunOptions:
    """How to run: tolerances, inputs, the reference, and what may run."""

    atol: float = 1e-5
    rtol: float = 1e-5
    inputs: InputOptions = field(default_factory=InputOptions)
    reference: str = "auto"
    """`auto`, `patched`, `meta` or `keras`."""
    allow_unsafe_ops: bool = False
    save_inputs: Path | None = None


def activation_diff(
    ours: NDArray[Any], theirs: NDArray[Any], atol: float, rtol: float
) -> ActivationDiff:
    """Compare two tensors in float64, block by block; NaN against NaN counts as equal."""
    if ours.shape != theirs.shape:
        return ActivationDiff(np.inf, np.inf, np.inf, float("nan"), True)
    a, b = ours.reshape(-1), theirs.reshape(-1)
    max_abs = max_rel = total = dot = norm_a = norm_b = 0.0
    for start in range(0, a.size, _BLOCK):
        ours_block, theirs_block = a[start : start + _BLOCK], b[start : start + _BLOCK]
        x, y = ours_block.astype(np.float64), theirs_block.astype(np.float64)
        if _all_finite(ours_block) and _all_finite(theirs_block):
            # The usual case, in fewer passes and the same numbers: no NaN, nothing to mask.
            delta = np.subtract(x, y)
            np.abs(delta, out=delta)
            relative = np.abs(y)
            np.maximum(relative, 1e-12, out=relative)
            with np.errstate(over="ignore"):  # float64 inputs near the limit: inf, as below
                np.divide(delta, relative, out=relative)
            max_abs = max(max_abs, float(delta.max()))
            max_rel = max(max_rel, float(relative.max()))
            total += float(delta.sum())
            dot += float(np.dot(x, y))
            norm_a += float(np.dot(x, x))
            norm_b += float(np.dot(y, y))
            continue
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            delta = np.where(same, 0.0, np.abs(x - y))
            delta[np.isnan(delta)] = np.inf
            scale = np.abs(y)
            relative = np.where(delta == 0, 0.0, delta / np.maximum(scale, 1e-12))
            relative[np.isnan(relative)] = np.inf
        finite = np.isfinite(x) & np.isfinite(y)
        max_abs = max(max_abs, float(delta.max()))
        max_rel = max(max_rel, float(relative.max()))
        total += float(delta.sum())
        dot += float(np.dot(x[finite], y[finite]))
        norm_a += float(np.dot(x[finite], x[finite]))
        norm_b += float(np.dot(y[finite], y[finite]))
    if norm_a == 0 and norm_b == 0:
        cosine = 1.0
    elif norm_a == 0 or norm_b == 0:
        cosine = 0.0
    else:
        cosine = dot / (np.sqrt(norm_a) * np.sqrt(norm_b))
    mean_abs = total / a.size if a.size else 0.0
    return ActivationDiff(max_abs, max_rel, mean_abs, cosine, max_abs > atol and max_rel > rtol)


def _all_finite(values: NDArray[Any]) -> bool:
    """No NaN and no infinity (min and max propagate both), without a boolean array."""
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))


def final_outputs(graph: Graph) -> list[str]:
    """Top-level nodes nobody consumes that compute from an input, in graph order."""
    top = graph.top
    consumed = {
        text.lstrip("^").split(":")[0] for node in top.nodes.values() for text in node.input
    }
    reached = {name for name, node in top.nodes.items() if node.op.startswith("Placeholder")}
    frontier = list(reached)
    while frontier:
        name = frontier.pop()
        for user, _, _ in top.consumers.get(name, []):
            if user not in reached:
                reached.add(user)
                frontier.append(user)
    names = [
        name
        for name, node in top.nodes.items()
        if name not in consumed and name in reached and node.op not in _NOT_OUTPUTS
    ]
    return sorted(names, key=lambda n: graph.order.get(n, 0))


def run_compare(
    static: StaticAudit,
    options: RunOptions,
    progress: Callable[[str], None],
    warn: Callable[[str], None],
) -> CompareReport:
    """The static report with each layer's activation difference and its findings."""
    from bnaudit.run.execute import Side, run_pair

    report, graph = static.report, static.graph
    choice = choose(options.reference, static)
    check_safe(graph.graph_def, str(graph.path), options.allow_unsafe_ops)
    flags = {layer.flag.name for layer in static.layers if layer.flag is not None}
    inputs = make_inputs(placeholders(graph.graph_def), flags, options.inputs)
    for warning in inputs.warnings:
        warn(warning)
    if options.save_inputs is not None:
        save_arrays(options.save_inputs, inputs.arrays)
    rows = list(report.layers)
    described: list[str] = []
    if choice.kind == "patched":
        # A fold the checkpoint cannot redo would run as frozen in both: nothing to learn.
        refoldable = {fold.scope for fold in static.folded}
        described += [
            f"{row.scope}: folded, and the checkpoint lacks the kernel or statistics to fold it "
            "again: its activation is not compared"
            for row in rows
            if row.op == "folded" and row.scope not in refoldable
        ]
        rows = [row for row in rows if row.op != "folded" or row.scope in refoldable]
    layer_names = list(dict.fromkeys(row.name for row in rows))
    outputs = [n for n in final_outputs(graph) if n not in layer_names]
    tensors = [f"{name}:0" for name in [*layer_names, *outputs]]
    side: Side | MetaSide | KerasSide
    if choice.meta is not None:
        side, how = _meta_side(static, choice.meta, inputs, flags, rows, outputs, options)
    elif choice.kind == "keras":
        side, how = _keras_side(static, inputs, rows, outputs)
    else:
        side, how = _patched_side(static, inputs)
    described = [*how, *described]
    reduced = run_pair(
        Side(graph.graph_def, {**inputs.arrays, **inputs.switches}, "frozen graph"),
        side,
        tensors,
        lambda a, b: activation_diff(a, b, options.atol, options.rtol),
        progress,
    )
    diffs = {name[:-2]: diff for name, diff in reduced.values.items()}
    described += [
        f"{row.scope}: the {choice.kind} reference has no counterpart of this layer; its "
        "activation is not compared"
        for row in rows
        if row.name not in diffs
    ]
    described += [
        f"output {name}: the {choice.kind} reference has no counterpart; it is not compared"
        for name in outputs
        if name not in diffs
    ]
    rows, first = _with_activations(report.layers, diffs, _true_flags(inputs))
    findings = list(report.findings)
    compared = tuple(OutputComparison(name, diffs[name]) for name in outputs if name in diffs)
    divergent_outputs = [o.name for o in compared if o.activation.divergent]
    if divergent_outputs and first is None:
        findings.append(
            Finding(
                "activation-divergence",
                Severity.ERROR,
                f"the final output {', '.join(divergent_outputs)} differs from the reference "
                "while no BN layer does: something outside BN (random ops, or a folded BN the "
                "reference keeps) changes the result",
            )
        )
    notes = [
        *report.notes,
        f"reference: {choice.kind} ({choice.reason})",
        *described,
        *inputs.warnings,
    ]
    return dataclasses.replace(
        report,
        layers=tuple(rows),
        findings=tuple(findings),
        notes=tuple(notes),
        first_divergent_layer=first,
        reference=choice.kind,
        reference_reason=choice.reason,
        outputs=compared,
    )


def _patched_side(static: StaticAudit, inputs: Inputs) -> tuple[Side, list[str]]:
    """The frozen graph with the checkpoint's BN values, flags forced False."""
    from bnaudit.run.execute import Side

    reference = patched_reference(static.graph, static.layers, static.paired, static.folded)
    switches = {n: v for n, v in inputs.switches.items() if n not in reference.forced_flags}
    forced = reference.forced_flags
    described = [
        "the frozen graph with the checkpoint's BN values, in inference mode"
        + (f" ({', '.join(forced)} forced False)" if forced else "")
        + (f"; {len(static.folded)} folded BN folded again from it" if static.folded else ""),
        *reference.notes,
    ]
    return Side(reference.graph_def, {**inputs.arrays, **switches}, "reference"), described


def _meta_side(
    static: StaticAudit,
    meta: MetaGraph,
    inputs: Inputs,
    frozen_flags: set[str],
    rows: list[LayerComparison],
    outputs: list[str],
    options: RunOptions,
) -> tuple[MetaSide, list[str]]:
    """The training graph of a `.meta`, restored from the checkpoint, its flags fed False."""
    from bnaudit.run.execute import MetaSide

    fetches = fetch_map(meta, rows, outputs)
    check_meta_safe(meta, fetches.values(), options.allow_unsafe_ops)
    nodes = meta.graph.top.nodes
    flags = [*meta.flags, *(f for f in sorted(frozen_flags) if f in nodes)]
    flags = list(dict.fromkeys(flags))
    feeds: dict[str, NDArray[Any]] = {name: _false(nodes[name]) for name in flags}
    for name, value in inputs.switches.items():
        if name in nodes and name not in frozen_flags:
            feeds.setdefault(name, value)  # a non-BN switch the user fed (dropout, ...)
    for name, value in inputs.arrays.items():
        if name not in nodes:
            raise BnauditError(
                f"the frozen graph's input {name} has no counterpart in {meta.path.name}; "
                "use --reference patched"
            )
        feeds[name] = value
    described = [
        f"{meta.path.name} restored from {static.checkpoint_path.name}"
        + (f", {', '.join(flags)} fed False" if flags else ", no training flag found"),
    ]
    side = MetaSide(
        meta_graph=meta.data,
        checkpoint=str(static.checkpoint_path),
        restore_op=meta.restore_op,
        filename_tensor=meta.filename_tensor,
        feeds=feeds,
        fetches=fetches,
        label=f"reference {meta.path.name}",
    )
    return side, described


def _keras_side(
    static: StaticAudit, inputs: Inputs, rows: list[LayerComparison], outputs: list[str]
) -> tuple[KerasSide, list[str]]:
    """The `.keras` model in inference, each BN layer paired by its checkpoint scope."""
    from bnaudit.run.execute import KerasSide

    # A Keras layer applied twice has no single output to expose: such rows are left out.
    applied = Counter(row.checkpoint_scope for row in rows if row.checkpoint_scope)
    fetches = {
        f"{row.name}:0": row.checkpoint_scope or normalize(row.scope)
        for row in rows
        if (row.checkpoint_scope or row.scope) and applied[row.checkpoint_scope or ""] <= 1
    }
    fetches.update({f"{name}:0": f"output:{i}" for i, name in enumerate(outputs)})
    side = KerasSide(
        path=static.checkpoint_path,
        inputs=list(inputs.arrays),
        feeds=dict(inputs.arrays),
        fetches=fetches,
        outputs=len(outputs),
        label=f"reference {static.checkpoint_path.name}",
    )
    return side, [f"{static.checkpoint_path.name} run by Keras with training=False"]


def _false(node: Any) -> NDArray[Any]:
    """False in the shape a flag placeholder declares (a scalar when unknown)."""
    shape = shape_of(node.attr["shape"].shape) if "shape" in node.attr else ()
    shape = shape if shape is not None and all(d >= 0 for d in shape) else ()
    return np.zeros(shape, dtype=bool)


def _true_flags(inputs: Inputs) -> set[str]:
    return {name for name, value in inputs.switches.items() if bool(np.all(value))}


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
                Finding(
                    "activation-divergence",
                    Severity.ERROR,
                    "the layer's output differs from what this checkpoint gives (beyond --atol "
                    f"and --rtol); {cause}",
                    row.scope,
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
