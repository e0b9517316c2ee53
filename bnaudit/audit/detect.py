"""Find every batch-normalization layer of a graph, by structure and never by name.

A layer is made of one or two cores (see `cores`):
- a fused op (`FusedBatchNorm`, `V2`, `V3`), alone, or two of them (training and inference)
  joined by a v1 `Merge`, or one in each branch function of a v2 `If`;
- the decomposition `tf.nn.batch_normalization` and Keras 3 write:
  `Rsqrt(var + eps)` [`* gamma`] -> `x * scale` and `mean * scale` -> `beta - ...` -> `add`.
Each layer's parameters are traced to their sources (see `trace`), which also gives its mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.cores import Core, find_cores, merged_pairs
from bnaudit.audit.placement import place
from bnaudit.audit.trace import (
    Batch,
    Choice,
    Const,
    Flag,
    Frame,
    MissingFunction,
    Source,
    Stack,
    Tracer,
    function_name,
    resolve,
)
from bnaudit.formats.ops import CALL_OPS, IF_OPS, VARIABLE_OPS, WHILE_OPS
from bnaudit.formats.tensors import decode_tensor
from bnaudit.model.graph import Body, Graph, TensorRef
from bnaudit.vocab import ROLES, STAT_ROLES, Mode, ParamKind, Role


@dataclass(frozen=True)
class Param:
    """Where one BN parameter comes from."""

    kind: ParamKind
    """`const`, `batch` (batch statistics), `absent` (scale/center off), `variable` (the
    graph was not frozen) or `other`."""
    source: str
    """The Const's or variable's node name, "batch statistics", "absent", or the op it comes
    from."""
    value: NDArray[Any] | None
    """The constant's value, when it is one."""


@dataclass(frozen=True)
class BnLayer:
    """One batch-normalization layer as found in the graph."""

    name: str
    """The layer's output node in the top-level graph."""
    scope: str
    """The name scope the layer was created under."""
    op: str
    """`FusedBatchNorm`, `FusedBatchNormV2`, `FusedBatchNormV3` or `decomposed`."""
    mode: Mode
    """`inference`, `training` or `conditional`."""
    flag: Flag | None
    """The flag deciding a conditional layer."""
    epsilon: float | None
    channels: int | None
    data_format: str | None
    params: dict[Role, Param]
    """gamma, beta, moving_mean, moving_variance: the values used in inference."""
    position: int
    """Index of the output node in a topological order of the graph."""
    core_nodes: tuple[str, ...]
    """The fused op(s), or the decomposition's `Rsqrt`, that make the layer."""
    fetchable: bool = True
    """Whether a run can fetch the layer's output as `name` (`node`, or `node:k` for the k-th
    output of a call returning it); not inside a loop, nor from a function that keeps it."""
    deviation: str | None = None
    """How a hand-written formula departs from BN's (epsilon outside the square root)."""
    input: str | None = None
    """The top-level tensor (`node:index`) the layer normalizes; None when it is computed
    inside a function or changed on the way."""
    in_loop: bool = False
    """Inside a loop (a `While` body or a v1 loop frame): it runs once per iteration, so no
    top-level tensor holds its output and a run cannot compare it."""


@dataclass(frozen=True)
class GraphScan:
    """What detection found: the layers and references to missing functions."""

    layers: list[BnLayer]
    missing_functions: list[tuple[str, str]]
    """(calling node, function name) for every call into a function the library lacks."""


def find_layers(graph: Graph) -> GraphScan:
    """Every BN layer of `graph` in graph order, and the graph's dangling function calls.

    Bodies are walked from the top-level graph down the functions it calls, each function
    once (a function called from several places is reported at its first caller), without
    recursion: call trees of any depth and width cost time linear in the graph.
    """
    tracer = Tracer(graph)
    layers: list[BnLayer] = []
    missing: list[tuple[str, str]] = []
    walked: set[str | None] = {None}
    pending: list[tuple[Body, Stack]] = [(graph.top, ())]
    while pending:
        body, stack = pending.pop()
        layers += _body_layers(graph, tracer, body, stack)
        for callee, callee_stack, pair in _calls(graph, tracer, body, stack, missing, walked):
            if pair:
                layers += pair
            else:
                pending.append((callee, callee_stack))
    layers.sort(key=lambda layer: layer.position)
    return GraphScan(layers=layers, missing_functions=missing)


def _body_layers(graph: Graph, tracer: Tracer, body: Body, stack: Stack) -> list[BnLayer]:
    """The layers whose cores sit in `body`: v1 Merge pairs, then single cores."""
    cores = find_cores(body, stack)
    layers = []
    paired: set[str] = set()
    top_name = stack[0].node if stack else None
    for first, second, merge in merged_pairs(body, cores):
        paired |= {first.node.name, second.node.name}
        found = tracer.switch_branch(body, body.inputs(first.node)[0])
        flag = tracer.flag(body, found[0], stack) if found else None
        if_true, if_false = (second, first) if found and not found[1] else (first, second)
        layers.append(_pair_layer(graph, tracer, if_true, if_false, flag, top_name or merge))
    for core in cores:
        if core.node.name not in paired:
            layers.append(_single_layer(graph, tracer, core, top_name or core.output))
    return layers


# The function attributes of each op that calls functions, and where their arguments start.
_FUNCTION_ATTRS = {
    **dict.fromkeys(IF_OPS, ("then_branch", "else_branch")),
    **dict.fromkeys(CALL_OPS, ("f",)),
    **dict.fromkeys(WHILE_OPS, ("cond", "body")),
}


def _calls(
    graph: Graph,
    tracer: Tracer,
    body: Body,
    stack: Stack,
    missing: list[tuple[str, str]],
    walked: set[str | None],
) -> list[tuple[Body, Stack, list[BnLayer]]]:
    """The functions `body` calls (If branches, calls, While cond and body) that are still to
    walk, with their call stacks; an If whose branches hold the same layers comes back as
    those conditional layers instead."""
    found: list[tuple[Body, Stack, list[BnLayer]]] = []
    top_name = stack[0].node if stack else None
    for name, node in body.nodes.items():
        attrs = _FUNCTION_ATTRS.get(node.op)
        if attrs is None:
            continue
        callees = []
        for attr in attrs:
            callee = graph.functions.get(function_name(node, attr))
            if callee is None:
                missing.append((name, function_name(node, attr)))
            elif callee.name not in walked:
                callees.append(callee)
        frame = Frame(body, name, 1 if node.op in IF_OPS else 0)
        if len(callees) == 2 and (pairs := _branch_pairs(callees[0], callees[1], (*stack, frame))):
            # The same layer in both branches of an If: one conditional layer.
            flag = tracer.flag(body, body.inputs(node)[0], stack)
            layers = [
                _pair_layer(graph, tracer, then_core, else_core, flag, top_name or name)
                for then_core, else_core in pairs
            ]
            walked.update(callee.name for callee in callees)
            found.append((callees[0], (), layers))
            continue
        for callee in callees:
            walked.add(callee.name)
            found.append((callee, (*stack, frame), []))
    return found


def _branch_pairs(then_body: Body, else_body: Body, stack: Stack) -> list[tuple[Core, Core]] | None:
    """Pair the BN cores of an If's two branches, or None when they do not pair up."""
    then_cores, else_cores = find_cores(then_body, stack), find_cores(else_body, stack)
    if not then_cores or len(then_cores) != len(else_cores):
        return None
    return list(zip(then_cores, else_cores, strict=True))


def _trace_params(tracer: Tracer, core: Core) -> dict[Role, Source | None]:
    return {
        role: None if ref is None else tracer.source(core.body, ref, core.stack)
        for role, ref in core.inputs.items()
    }


def _single_layer(graph: Graph, tracer: Tracer, core: Core, output: str) -> BnLayer:
    sources = _trace_params(tracer, core)
    if core.is_training:
        sources.update({role: Batch(core.node.name) for role in STAT_ROLES})
    stats = [sources[r] for r in STAT_ROLES]
    flags = [s.flag for s in stats if isinstance(s, Choice)]
    mode: Mode
    if flags:
        mode, flag = "conditional", flags[0]
    elif any(isinstance(s, Batch) for s in stats):
        mode, flag = "training", None
    else:
        mode, flag = "inference", None
    branch = _branch_flag(tracer, core.stack)
    if branch is not None and mode != "conditional":
        # In one branch of an If: whether it runs at all is the flag's choice.
        mode, flag = "conditional", branch
    return _layer(graph, tracer, core, output, mode, flag, sources)


def _branch_flag(tracer: Tracer, stack: Stack) -> Flag | None:
    """The flag of the innermost If that `stack` enters a branch of, unless it is a
    constant (then the branch taken is fixed and the layer's own mode stands)."""
    for depth in range(len(stack) - 1, -1, -1):
        frame = stack[depth]
        caller = frame.body.nodes[frame.node]
        if caller.op in IF_OPS:
            flag = tracer.flag(frame.body, frame.body.inputs(caller)[0], stack[:depth])
            if not flag.constant:
                return flag
    return None


def _pair_layer(
    graph: Graph,
    tracer: Tracer,
    if_true: Core,
    if_false: Core,
    flag: Flag | None,
    output: str,
) -> BnLayer:
    """One layer made of two cores, the flag choosing `if_true` or `if_false`."""
    training = {id(c): _uses_batch_stats(tracer, c) for c in (if_true, if_false)}
    inference = if_false if training[id(if_true)] else if_true
    sources = _trace_params(tracer, inference)
    mode: Mode = "conditional"
    if flag is not None and flag.constant:
        chosen = if_true if flag.default else if_false
        mode = "training" if training[id(chosen)] else "inference"
        flag = None
    if mode == "training":
        sources.update({role: Batch(inference.node.name) for role in STAT_ROLES})
    layer = _layer(graph, tracer, inference, output, mode, flag, sources)
    return BnLayer(**{**layer.__dict__, "core_nodes": (if_true.node.name, if_false.node.name)})


def _uses_batch_stats(tracer: Tracer, core: Core) -> bool:
    if core.is_training is not None:
        return core.is_training
    mean = core.inputs["moving_mean"]
    return mean is not None and isinstance(tracer.source(core.body, mean, core.stack), Batch)


def _layer(
    graph: Graph,
    tracer: Tracer,
    core: Core,
    output: str,
    mode: Mode,
    flag: Flag | None,
    sources: dict[Role, Source | None],
) -> BnLayer:
    params = {role: _param(_inference_source(sources[role], role)) for role in ROLES}
    where = place(tracer, core, output)
    return BnLayer(
        name=where.name,
        scope=where.scope,
        op=core.op,
        mode=mode,
        flag=flag,
        epsilon=core.epsilon,
        channels=_channels(params),
        data_format=core.data_format or _implied_format(core, params),
        params=params,
        position=graph.order.get(where.name.partition(":")[0], len(graph.order)),
        core_nodes=(core.node.name,),
        input=where.input,
        deviation=core.deviation,
        in_loop=where.in_loop,
        fetchable=where.fetchable,
    )


def _inference_source(source: Source | None, role: Role) -> Source | None:
    """The source used when the flags say inference; None when the parameter is absent.

    A fused op always takes a scale and an offset: with `scale=False`/`center=False` the
    layer feeds it a constant of ones/zeros that no variable stands behind.
    """
    if source is None:
        return None
    source = resolve(source, False)
    fill = {"gamma": 1, "beta": 0}.get(role)
    if (
        isinstance(source, Const)
        and not source.read
        and source.value is not None
        and fill is not None
        and np.all(source.value == fill)
    ):
        return None
    return source


def _param(source: Source | None) -> Param:
    if source is None:
        return Param("absent", "absent", None)
    if isinstance(source, Const):
        return Param("const", source.node, source.value)
    if isinstance(source, Batch):
        return Param("batch", "batch statistics", None)
    if isinstance(source, MissingFunction):
        return Param("other", f"missing function {source.function}", None)
    if isinstance(source, Choice):
        return Param("other", f"depends on {source.flag.name}", None)
    if source.op in VARIABLE_OPS:
        return Param("variable", source.node, None)
    return Param("other", f"{source.op} {source.node}", None)


def _implied_format(core: Core, params: dict[Role, Param]) -> str | None:
    """A decomposition's layout, from how its parameters broadcast against the input.

    Keras reshapes the parameters of `BatchNormalization(axis=1)` to `[1, C, 1, 1]`; a
    1-D parameter broadcasts along the last axis.
    """
    for role, param in params.items():
        value = param.value
        if value is None or value.size <= 1:
            continue
        ref = core.inputs[role]
        shape = _reshaped_to(core.body, ref) if ref is not None else None
        shape = shape or value.shape
        if len(shape) >= 3 and shape[1] == value.size:
            return "channels_first"
        if shape[-1] == value.size:
            return "channels_last"
    return None


def _reshaped_to(body: Body, ref: TensorRef) -> tuple[int, ...] | None:
    """The Const target shape of a Reshape on the way from `ref` back to its source."""
    for _ in range(8):
        node = body.nodes.get(ref.node)
        if node is None or not node.input:
            return None
        if node.op == "Reshape":
            target = body.nodes.get(body.inputs(node)[1].node)
            if target is None or target.op != "Const":
                return None
            value = decode_tensor(target.attr["value"].tensor, target.name)
            return None if value is None else tuple(int(d) for d in value.reshape(-1))
        if node.op not in ("Identity", "Cast", "ReadVariableOp", "Snapshot"):
            return None
        ref = body.inputs(node)[0]
    return None


def _channels(params: dict[Role, Param]) -> int | None:
    for role in ("moving_variance", "moving_mean", "gamma", "beta"):
        value = params[role].value
        if value is not None and value.ndim >= 1:
            return int(np.prod(value.shape))
    return None
