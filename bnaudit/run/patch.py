"""The checkpoint's side of a run: what freezing this checkpoint correctly would have produced.

The `patched` reference is a copy of the frozen GraphDef in which
- every BN parameter constant of every paired layer holds the checkpoint's value;
- every training flag is a `Const` False of the same name (inference);
- a layer frozen in training mode (a fused op with `is_training=True`, or a decomposition
  fed the batch's moments) normalizes with the checkpoint's moving statistics instead.
- BN folded into a convolution (`optimize_for_inference`) is folded again from the
  checkpoint: the folded weights become `kernel * gamma / sqrt(var + eps)` and the offset
  `beta + (bias - mean) * gamma / sqrt(var + eps)`, with the epsilon that best explains the
  frozen fold.
Everything else, names included, is the frozen graph's, so both graphs answer the same
fetches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.compare import PairedLayer
from bnaudit.audit.detect import BnLayer
from bnaudit.audit.fold import FoldedLayer, refold
from bnaudit.audit.trace import Tracer
from bnaudit.formats import protos
from bnaudit.formats.ops import FUSED_OPS, IF_OPS
from bnaudit.formats.tensors import encode_tensor, shape_of
from bnaudit.model.graph import Body, Graph

_DT_FLOAT = 1
_DT_BOOL = 10


@dataclass(frozen=True)
class PatchedGraph:
    """A graph that computes what the checkpoint says each BN layer should output."""

    graph_def: Any
    """A GraphDef (bnaudit's own message class) with the frozen graph's node names."""
    forced_flags: tuple[str, ...]
    """Training flags replaced by a constant False: never fed to this graph."""
    notes: tuple[str, ...]
    """What could not be patched, and why."""


class _Nodes:
    """Find nodes of the copied GraphDef by name, in the top level first, then in functions."""

    def __init__(self, graph_def: Any) -> None:
        self.graph_def = graph_def
        self.top = {n.name: n for n in graph_def.node}
        self.functions = {
            f.signature.name: (f, {n.name: n for n in f.node_def})
            for f in graph_def.library.function
        }

    def find(self, name: str) -> tuple[Any, Any | None] | None:
        """(node, the function holding it or None), or None when there is no such node."""
        if name in self.top:
            return self.top[name], None
        for function, nodes in self.functions.values():
            if name in nodes:
                return nodes[name], function
        return None

    def add_const(self, name: str, value: NDArray[Any], dtype: int, function: Any | None) -> str:
        """A new Const beside the nodes of `function` (or the top level); its input string."""
        node = (function.node_def if function is not None else self.graph_def.node).add()
        node.name, node.op = name, "Const"
        node.attr["dtype"].type = dtype
        node.attr["value"].tensor.CopyFrom(encode_tensor(value, dtype))
        return name if function is None else f"{name}:output:0"


def patched_reference(
    graph: Graph,
    layers: Sequence[BnLayer],
    paired: Sequence[PairedLayer],
    folded: Sequence[FoldedLayer] = (),
) -> PatchedGraph:
    """The frozen graph with the checkpoint's BN values, every layer in inference mode."""
    copy = protos.GraphDef()
    copy.CopyFrom(graph.graph_def)
    nodes = _Nodes(copy)
    notes: list[str] = []
    for item in paired:
        notes += _patch_params(nodes, item)
        if item.layer.mode == "training" and len(item.layer.core_nodes) == 1:
            notes += _to_inference(graph, nodes, item)
    for fold in folded:
        notes += _refold(nodes, fold)
    forced = _force_flags(graph, nodes, layers)
    return PatchedGraph(copy, tuple(forced), tuple(notes))


def _patch_params(nodes: _Nodes, item: PairedLayer) -> list[str]:
    notes = []
    for role, param in item.layer.params.items():
        value = item.values.get(role)
        if param.kind != "const":
            continue
        if value is None:
            notes.append(
                f"{item.layer.scope}: the checkpoint has no {role}; the reference keeps the "
                "frozen value"
            )
            continue
        found = nodes.find(param.source)
        if found is None or found[0].op != "Const":
            notes.append(f"{item.layer.scope}: {role} constant {param.source} not found")
            continue
        node = found[0]
        tensor = node.attr["value"].tensor
        shape = shape_of(tensor.tensor_shape) or ()
        if int(np.prod(shape, dtype=np.int64)) != value.size:
            notes.append(
                f"{item.layer.scope}: {role} has {value.size} values in the checkpoint and "
                f"shape {shape} in the graph; the reference keeps the frozen value"
            )
            continue
        tensor.CopyFrom(encode_tensor(value.reshape(shape), int(tensor.dtype) % 100))
    return notes


def _refold(nodes: _Nodes, fold: FoldedLayer) -> list[str]:
    """Fold the checkpoint's BN into the folded weights and offset, with the fold's epsilon.

    A fold that already matches the checkpoint (within the fold tolerances) stays as frozen:
    folding it again in float64 would change only the last bits of its weights, and a
    healthy network would show that rounding as a difference.
    """
    if fold.matches:
        return []
    candidate = fold.candidate
    weights, offset = refold(fold.kernel, fold.bias, fold.stats, fold.epsilon, candidate.linear_op)
    for name, value in ((candidate.weights_node, weights), (candidate.offset_node, offset)):
        found = nodes.find(name)
        if found is None or found[0].op != "Const":
            return [f"{fold.scope}: folded constant {name} not found; not refolded"]
        tensor = found[0].attr["value"].tensor
        shape = shape_of(tensor.tensor_shape) or ()
        if tuple(shape) != value.shape:
            return [
                f"{fold.scope}: the checkpoint folds to shape {value.shape}, {name} has "
                f"{tuple(shape)}; not refolded"
            ]
        tensor.CopyFrom(encode_tensor(value, int(tensor.dtype) % 100))
    return []


def _to_inference(graph: Graph, nodes: _Nodes, item: PairedLayer) -> list[str]:
    """Make a layer frozen in training mode use the checkpoint's moving statistics."""
    layer = item.layer
    mean, variance = item.values.get("moving_mean"), item.values.get("moving_variance")
    if mean is None or variance is None:
        return [
            f"{layer.scope}: frozen in training mode and the checkpoint has no moving "
            "statistics; the reference keeps it in training mode"
        ]
    found = nodes.find(layer.core_nodes[0])
    if found is None:
        return [f"{layer.scope}: core node {layer.core_nodes[0]} not found"]
    core, function = found
    base = f"{core.name}/bnaudit"
    if core.op in FUSED_OPS:
        dtype = int(core.attr["U"].type) if "U" in core.attr else _DT_FLOAT
        core.attr["is_training"].b = False
        core.input[3] = nodes.add_const(f"{base}_moving_mean", mean, dtype, function)
        core.input[4] = nodes.add_const(f"{base}_moving_variance", variance, dtype, function)
        return []
    body = graph.top if function is None else graph.functions[function.signature.name]
    slots = _decomposed_stat_slots(body, core.name)
    if slots is None:
        return [f"{layer.scope}: could not find where its batch statistics enter"]
    if layer.data_format == "channels_first":
        mean, variance = mean.reshape(-1, 1, 1), variance.reshape(-1, 1, 1)
    for (user, position), value, role in zip(
        slots, (mean, variance), ("moving_mean", "moving_variance"), strict=True
    ):
        node = nodes.find(user)
        assert node is not None
        dtype = int(node[0].attr["T"].type) if "T" in node[0].attr else _DT_FLOAT
        node[0].input[position] = nodes.add_const(f"{base}_{role}", value, dtype, function)
    return []


def _decomposed_stat_slots(
    body: Body, rsqrt: str
) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """(node, input position) where a decomposition reads its mean, and its variance."""
    add_ref = body.inputs(body.nodes[rsqrt])[0]
    variance = (add_ref.node, 0)

    def muls(name: str) -> list[tuple[str, int]]:
        return [
            (user, position)
            for user, position, index in body.consumers.get(name, [])
            if index == 0 and body.nodes[user].op == "Mul"
        ]

    scale = rsqrt
    users = muls(rsqrt)
    if len(users) == 1 and len(muls(users[0][0])) == 2:
        scale = users[0][0]  # Rsqrt * gamma
    for user, position in muls(scale):
        other = body.inputs(body.nodes[user])[1 - position]
        subs = [(u, p) for u, p, _ in body.consumers.get(user, []) if body.nodes[u].op == "Sub"]
        if subs and subs[0][1] == 1:
            return (user, 1 - position), variance  # beta - mean * scale
        other_node = body.nodes.get(other.node)
        if other_node is not None and other_node.op == "Neg":
            return (other.node, 0), variance  # (-mean) * scale, without beta
    return None


def _force_flags(graph: Graph, nodes: _Nodes, layers: Sequence[BnLayer]) -> list[str]:
    """Replace every layer's training flag by a Const False; the names of those replaced."""
    tracer = Tracer(graph)
    names: list[str] = []
    for layer in layers:
        flag = layer.flag
        name = flag.name if flag is not None else _constant_flag(graph, tracer, layer)
        if name is None or name in names or name not in nodes.top:
            continue
        node = nodes.top[name]
        shape = shape_of(node.attr["shape"].shape) if "shape" in node.attr else ()
        shape = shape if shape is not None and all(d >= 0 for d in shape) else ()
        node.ClearField("input")
        node.ClearField("attr")
        node.op = "Const"
        node.attr["dtype"].type = _DT_BOOL
        node.attr["value"].tensor.CopyFrom(encode_tensor(np.zeros(shape, bool), _DT_BOOL))
        names.append(name)
    return names


def _constant_flag(graph: Graph, tracer: Tracer, layer: BnLayer) -> str | None:
    """The constant True that put a two-branch layer in training mode, if that is what did."""
    if layer.mode != "training" or len(layer.core_nodes) != 2:
        return None
    top = graph.top
    node = top.nodes.get(layer.name)
    if node is None:
        return None
    if node.op in IF_OPS:
        pred = top.inputs(node)[0]
    elif node.op in ("Merge", "RefMerge"):
        found = tracer.switch_branch(top, top.inputs(node)[0])
        if found is None:
            return None
        pred = found[0]
    else:
        return None
    flag = tracer.flag(top, pred)
    return flag.name if flag.constant else None
