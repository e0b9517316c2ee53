"""Plan a run, without running anything: what is fed, what is compared, against which reference.

`plan_run` vets the frozen graph (no op acting outside the process unless allowed), makes the
inputs, picks and builds the reference, and lists the tensors to fetch: every compared BN
layer's output, then the graph's final outputs. The benchmark's TensorFlow baseline is
prepared from the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnaudit.audit.compare import StaticAudit
from bnaudit.model.graph import Graph
from bnaudit.report.results import LayerComparison
from bnaudit.run.bounds import check_runnable
from bnaudit.run.inputs import Inputs, make_inputs, placeholders
from bnaudit.run.options import RunOptions
from bnaudit.run.references import Choice, build_reference, choose, training_flags
from bnaudit.run.safety import check_safe
from bnaudit.run.sides import Reference, Side

# Ops that produce no tensor a user reads: never a final output.
_NOT_OUTPUTS = frozenset(
    {
        "NoOp", "Const", "Placeholder", "PlaceholderWithDefault", "Assert", "PrintV2",
        "Assign", "AssignAdd", "AssignSub", "AssignVariableOp", "AssignAddVariableOp",
        "AssignSubVariableOp", "ControlTrigger", "SaveV2", "Save", "SaveSlices", "WriteFile",
    }
)  # fmt: skip


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, decided before TensorFlow is imported."""

    choice: Choice
    """The reference and why it was chosen."""
    inputs: Inputs
    rows: tuple[LayerComparison, ...]
    """The report rows whose activations are compared (a fold the checkpoint cannot redo is
    left out of a patched run)."""
    outputs: tuple[str, ...]
    """The graph's final outputs, compared too."""
    tensors: tuple[str, ...]
    """What both sides fetch, as the frozen graph names it: rows, then outputs."""
    frozen: Side
    reference: Reference
    notes: tuple[str, ...]
    """What the reference is, and what is not compared and why."""


def plan_run(static: StaticAudit, options: RunOptions) -> RunPlan:
    """The run `compare` would do; a BnauditError when the graph or the reference is refused."""
    graph = static.graph
    choice = choose(options.reference, static, options.allow_unsafe_ops)
    check_safe(graph.graph_def, str(graph.path), options.allow_unsafe_ops)
    if not options.allow_unsafe_ops:
        check_runnable(graph, str(graph.path))
    inputs = make_inputs(placeholders(graph.graph_def), training_flags(static), options.inputs)
    rows = list(static.report.layers)
    skipped: list[str] = []
    if choice.kind == "patched":
        # A fold the checkpoint cannot redo would run as frozen in both: nothing to learn.
        refoldable = {fold.scope for fold in static.folded}
        skipped = [
            f"{row.scope}: folded, and the checkpoint lacks the kernel or statistics to fold it "
            "again: its activation is not compared"
            for row in rows
            if row.op == "folded" and row.scope not in refoldable
        ]
        rows = [row for row in rows if row.op != "folded" or row.scope in refoldable]
    layer_names = list(dict.fromkeys(row.name for row in rows))
    outputs = [n for n in final_outputs(graph) if n not in layer_names]
    reference, described = build_reference(choice, static, inputs, rows, outputs, options)
    frozen = Side(graph.graph_def, {**inputs.arrays, **inputs.switches}, "frozen graph")
    return RunPlan(
        choice=choice,
        inputs=inputs,
        rows=tuple(rows),
        outputs=tuple(outputs),
        tensors=tuple(f"{name}:0" for name in [*layer_names, *outputs]),
        frozen=frozen,
        reference=reference,
        notes=(*described, *skipped),
    )


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


def true_flags(inputs: Inputs) -> set[str]:
    """The switches the frozen graph is fed True."""
    return {name for name, value in inputs.switches.items() if bool(np.all(value))}
