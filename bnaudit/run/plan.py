"""Plan a run, without running anything: what is fed, what is compared, against which reference.

`plan_run` vets the frozen graph (no op acting outside the process unless allowed), makes the
inputs, picks and builds the reference, and lists the tensors to fetch: every compared BN
layer's output, then the graph's final outputs. The benchmark's TensorFlow baseline is
prepared from the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.compare import StaticAudit
from bnaudit.model.graph import Graph
from bnaudit.names import tensor_name
from bnaudit.report.results import LayerComparison
from bnaudit.run.bounds import check_runnable
from bnaudit.run.contribution import LayerMath, half_precision, layer_math
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
    """What both sides fetch, as the frozen graph names it: each row's input then its
    output, then the final outputs."""
    frozen: Side
    reference: Reference
    notes: tuple[str, ...]
    """What the reference is, and what is not compared and why."""
    layer_inputs: dict[str, str] = field(default_factory=dict)
    """A row's output tensor -> the tensor its layer normalizes, for the rows whose own
    contribution numpy can measure (`maths`)."""
    maths: dict[str, LayerMath] = field(default_factory=dict)
    """A row's output tensor -> how its frozen layer computes on this run's feeds."""
    flags: dict[str, str] = field(default_factory=dict)
    """A row's node -> the training flag its frozen layer reads, where it reads one."""
    precision: float = 0.0
    """The epsilon of the narrowest float the frozen graph computes in, when narrower than
    float32 (see `contribution.Contributions`); 0 otherwise."""


def plan_run(static: StaticAudit, options: RunOptions) -> RunPlan:
    """The run `compare` would do; a BnauditError when the graph or the reference is refused."""
    graph = static.graph
    choice = choose(options.reference, static, options.allow_unsafe_ops)
    check_safe(graph.graph_def, str(graph.path), options.allow_unsafe_ops)
    if not options.allow_unsafe_ops:
        check_runnable(graph, str(graph.path))
    inputs = make_inputs(placeholders(graph.graph_def), training_flags(static), options.inputs)
    rows, skipped = _compared_rows(static, choice)
    layer_names = list(dict.fromkeys(row.name for row in rows))
    outputs = [n for n in final_outputs(graph) if n not in layer_names]
    fed = {**inputs.arrays, **inputs.switches}
    maths, layer_inputs = _own_measures(static, layer_names, fed)
    reference, described = build_reference(
        choice, static, inputs, rows, outputs, options, layer_inputs
    )
    tensors = [
        t
        for name in layer_names
        for t in (layer_inputs.get(tensor_name(name)), tensor_name(name))
        if t
    ]
    frozen = Side(graph.graph_def, {**inputs.arrays, **inputs.switches}, "frozen graph")
    return RunPlan(
        choice=choice,
        inputs=inputs,
        rows=tuple(rows),
        outputs=tuple(outputs),
        tensors=tuple(dict.fromkeys([*tensors, *(tensor_name(name) for name in outputs)])),
        layer_inputs=layer_inputs,
        maths=maths,
        flags={
            layer.name: layer.flag.name
            for layer in static.layers
            if layer.flag is not None and layer.name in layer_names
        },
        frozen=frozen,
        reference=reference,
        notes=(*described, *skipped),
        precision=half_precision(graph.graph_def),
    )


def _compared_rows(static: StaticAudit, choice: Choice) -> tuple[list[LayerComparison], list[str]]:
    """The report rows a run compares, and a note for each one it cannot."""
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
    # A layer inside a loop runs once per iteration, and one in a function that does not
    # return its output has none at the top level: no tensor holds its one output.
    hidden = {layer.name: layer.in_loop for layer in static.layers if not layer.fetchable}
    skipped += [
        f"{row.scope}: "
        + (
            "inside a while loop, it runs once per iteration"
            if hidden[row.name]
            else "inside a function that does not return its output"
        )
        + ": its activation is not compared"
        for row in rows
        if row.name in hidden
    ]
    return [row for row in rows if row.name not in hidden], skipped


def _own_measures(
    static: StaticAudit, names: list[str], fed: dict[str, NDArray[Any]]
) -> tuple[dict[str, LayerMath], dict[str, str]]:
    """For each row numpy can apply: how its frozen layer computes, and the tensor it reads."""
    layers = {layer.name: layer for layer in static.layers}
    maths: dict[str, LayerMath] = {}
    inputs: dict[str, str] = {}
    for name in names:
        layer = layers.get(name)
        math = None if layer is None or layer.input is None else layer_math(layer, fed)
        if layer is not None and layer.input is not None and math is not None:
            maths[tensor_name(name)] = math
            inputs[tensor_name(name)] = layer.input
    return maths, inputs


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
