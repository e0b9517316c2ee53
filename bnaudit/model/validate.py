"""Check that a graph is well formed before anything reads it, as TensorFlow would at import.

A damaged or hostile graph must fail here, with a one-line reason, rather than crash a later
stage, hang it, or pass for a healthy model: duplicate names, malformed or dangling inputs,
too few inputs, an output index an op does not have, attributes of the wrong type, constants
whose content disagrees with their shape, cycles outside a loop, and functions that call
themselves.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bnaudit.errors import BnauditError
from bnaudit.formats.ops import CALL_OPS, FUSED_OPS, IF_OPS
from bnaudit.formats.tensors import declared_count, element_size, listed_count
from bnaudit.model.graph import Body, Graph

_TOP_INPUT = re.compile(r"^\^?[^:^]+(:\d+)?$")
_FUNCTION_INPUT = re.compile(r"^\^?[^:^]+(:[A-Za-z_]\w*:\d+|:\d+)?$")
# Ops with exactly one output: bnaudit follows their output 0, and TensorFlow refuses any other.
_ONE_OUTPUT = frozenset(
    {
        "Const", "Placeholder", "PlaceholderWithDefault", "Identity", "RefIdentity", "Cast",
        "ReadVariableOp", "Enter", "RefEnter", "Snapshot", "StopGradient", "PreventGradient",
        "CheckNumerics", "Squeeze", "Reshape", "ExpandDims", "EnsureShape", "Rsqrt", "Neg",
        "Mul", "Sub", "Add", "AddV2", "BiasAdd", "Conv2D", "Conv3D", "MatMul",
        "DepthwiseConv2dNative", "Mean", "SquaredDifference", "Square",
    }
)  # fmt: skip
_MAX_OUTPUT_INDEX = 2**16
"""No op has this many outputs: an index beyond it is damage, whatever the op."""
_INDEXED_OPS = frozenset({"IdentityN"}) | FUSED_OPS | IF_OPS | CALL_OPS | _ONE_OUTPUT
_LOOP_BACK_EDGES = frozenset({"NextIteration", "RefNextIteration"})
# The attributes bnaudit reads, by op, and the kind of value each must hold.
_FUSED_ATTRS = {"epsilon": "f", "is_training": "b", "data_format": "s", "U": "type"}
_ATTR_KINDS: dict[str, dict[str, str]] = {
    **dict.fromkeys(FUSED_OPS, _FUSED_ATTRS),
    "Const": {"value": "tensor", "dtype": "type"},
    "Placeholder": {"dtype": "type", "shape": "shape"},
    "PlaceholderWithDefault": {"dtype": "type", "shape": "shape"},
    "If": {"then_branch": "func", "else_branch": "func"},
    "StatelessIf": {"then_branch": "func", "else_branch": "func"},
    "PartitionedCall": {"f": "func"},
    "StatefulPartitionedCall": {"f": "func"},
    "PrintV2": {"output_stream": "s"},
}
# Data inputs the ops bnaudit follows always have; TensorFlow refuses a node with fewer.
_MIN_INPUTS = {
    **dict.fromkeys(
        ("Identity", "RefIdentity", "Cast", "ReadVariableOp", "Enter", "RefEnter", "Snapshot",
         "StopGradient", "PreventGradient", "CheckNumerics", "Squeeze", "Rsqrt", "Neg",
         "PlaceholderWithDefault", "If", "StatelessIf", "Merge", "RefMerge"),
        1,
    ),
    **dict.fromkeys(
        ("Switch", "RefSwitch", "Mul", "Sub", "Add", "AddV2", "BiasAdd", "Conv2D", "Conv3D",
         "MatMul", "DepthwiseConv2dNative", "Reshape", "ExpandDims", "EnsureShape"),
        2,
    ),
    **dict.fromkeys(FUSED_OPS, 5),
}  # fmt: skip


def check_graph_def(path: Path, graph_def: Any) -> None:
    """What can be checked on the message alone: names, input syntax, attributes, constants."""
    _check_nodes(path, None, graph_def.node, _TOP_INPUT)
    functions: set[str] = set()
    for function in graph_def.library.function:
        name = function.signature.name
        if name in functions:
            raise _damaged(path, f"the library defines function {name!r} twice")
        functions.add(name)
        _check_nodes(path, name, function.node_def, _FUNCTION_INPUT)
        for arg in function.signature.output_arg:
            ret = function.ret.get(arg.name)
            if ret is None or not _FUNCTION_INPUT.match(ret):
                raise _damaged(path, f"function {name!r} does not return its output {arg.name!r}")


def check_graph(graph: Graph) -> None:
    """What needs the index: references, arities, output indices, cycles, recursion."""
    for body in (graph.top, *graph.functions.values()):
        _check_references(graph.path, body)
        _check_arity(graph, body)
        _check_acyclic(graph.path, body)
    _check_no_recursion(graph)


def _damaged(path: Path, what: str) -> BnauditError:
    return BnauditError(f"{path}: {what}; the graph is damaged: export it again")


def _where(body_name: str | None) -> str:
    return f" in function {body_name!r}" if body_name else ""


def _check_nodes(
    path: Path, body: str | None, nodes: Iterable[Any], syntax: re.Pattern[str]
) -> None:
    seen: set[str] = set()
    for node in nodes:
        if node.name in seen:
            raise _damaged(path, f"two nodes are named {node.name!r}{_where(body)}")
        seen.add(node.name)
        for text in node.input:
            if not syntax.match(text):
                raise _damaged(path, f"node {node.name!r}{_where(body)} has input {text!r}")
        for attr, kind in _ATTR_KINDS.get(node.op, {}).items():
            if attr in node.attr and node.attr[attr].WhichOneof("value") not in (kind, None):
                found = node.attr[attr].WhichOneof("value")
                raise _damaged(
                    path,
                    f"node {node.name!r}{_where(body)} has attribute {attr} of kind {found}, "
                    f"where {node.op} takes {kind}",
                )
        if node.op == "Const" and "value" in node.attr:
            _check_const(path, body, node)


def _check_const(path: Path, body: str | None, node: Any) -> None:
    """A constant's shape is sane and its content fits it, as TensorFlow checks at import.

    Fills (one value, or a run, for many elements) are bounded where they are expanded, and
    before a run (`run.safety.check_fills`).
    """
    tensor = node.attr["value"].tensor
    dims = [int(d.size) for d in tensor.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise _damaged(path, f"Const {node.name!r}{_where(body)} has shape {dims}")
    count = declared_count(tensor)
    size = element_size(int(tensor.dtype) % 100)
    content = len(tensor.tensor_content)
    listed = listed_count(tensor)
    if (content and size is not None and content != count * size) or listed > max(count, 1):
        held = f"{content} bytes" if content else f"{listed} values"
        raise _damaged(path, f"Const {node.name!r}{_where(body)} holds {held} for shape {dims}")


def _check_references(path: Path, body: Body) -> None:
    for name, node in body.nodes.items():
        for text in node.input:
            producer = text.lstrip("^").split(":")[0]
            if producer not in body.nodes and producer not in body.args:
                raise BnauditError(
                    f"{path}: node {name!r}{_where(body.name)} reads {producer!r}, which the "
                    "graph does not contain; the file looks truncated or cut from a larger "
                    "graph: export it again"
                )


def _check_arity(graph: Graph, body: Body) -> None:
    # Only outputs of these ops are followed by index; other inputs need no parsing here.
    indexed = {name for name, node in body.nodes.items() if node.op in _INDEXED_OPS}
    for name, node in body.nodes.items():
        data = [text for text in node.input if not text.startswith("^")]
        need = _MIN_INPUTS.get(node.op, 0)
        if node.op in IF_OPS or node.op in CALL_OPS:
            need = max(need, _call_arity(graph, node))
        if len(data) < need:
            raise _damaged(
                graph.path,
                f"node {name!r}{_where(body.name)} ({node.op}) has {len(data)} input(s) where "
                f"the op takes {need}",
            )
        for text in data:
            if text.split(":", 1)[0] not in indexed and not _huge_index(text):
                continue
            ref = body.parse_ref(text)
            if ref.index >= _MAX_OUTPUT_INDEX:
                raise _damaged(graph.path, f"node {name!r}{_where(body.name)} reads {text!r}")
            outputs = _outputs(graph, body, ref.node)
            if outputs is not None and ref.index >= outputs:
                raise _damaged(
                    graph.path,
                    f"node {name!r}{_where(body.name)} reads output {ref.index} of "
                    f"{ref.node!r}, which has {outputs}",
                )


def _huge_index(text: str) -> bool:
    index = text.rsplit(":", 1)[-1] if ":" in text else "0"
    return len(index) > 5


def _call_arity(graph: Graph, node: Any) -> int:
    """How many data inputs an If or call needs for the functions it names."""
    attrs = ("then_branch", "else_branch") if node.op in IF_OPS else ("f",)
    offset = 1 if node.op in IF_OPS else 0
    callees = [graph.functions.get(node.attr[a].func.name) for a in attrs if a in node.attr]
    return max((offset + len(c.args) for c in callees if c is not None), default=offset)


def _outputs(graph: Graph, body: Body, name: str) -> int | None:
    """How many outputs the node has, for the ops bnaudit follows by output index."""
    node = body.nodes.get(name)
    if node is None:
        return None
    if node.op in _ONE_OUTPUT:
        return 1
    if node.op == "IdentityN":
        return len(body.inputs(node))
    if node.op in FUSED_OPS:
        return 5 if node.op == "FusedBatchNorm" else 6
    if node.op in IF_OPS or node.op in CALL_OPS:
        attr = "then_branch" if node.op in IF_OPS else "f"
        callee = graph.functions.get(node.attr[attr].func.name) if attr in node.attr else None
        return None if callee is None else len(callee.rets)
    return None


def _check_acyclic(path: Path, body: Body) -> None:
    """No cycle but through a v1 loop's NextIteration (TensorFlow refuses any other)."""
    users: dict[str, list[str]] = defaultdict(list)
    waiting = dict.fromkeys(body.nodes, 0)
    for name, node in body.nodes.items():
        for text in node.input:
            producer = text.lstrip("^").split(":")[0]
            if producer in body.nodes and body.nodes[producer].op not in _LOOP_BACK_EDGES:
                users[producer].append(name)
                waiting[name] += 1
    ready = deque(name for name, count in waiting.items() if count == 0)
    while ready:
        for user in users[ready.popleft()]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    stuck = [name for name, count in waiting.items() if count]
    if stuck:
        raise _damaged(
            path,
            f"node {stuck[0]!r}{_where(body.name)} is on a cycle that is not a loop "
            f"({len(stuck)} nodes wait on each other)",
        )


def _callees(body: Body) -> set[str]:
    """The functions a body's nodes name in their attributes (branches, bodies, calls)."""
    names: set[str] = set()
    for node in body.nodes.values():
        for value in node.attr.values():
            if value.WhichOneof("value") == "func":
                names.add(value.func.name)
            elif value.WhichOneof("value") == "list":
                names.update(f.name for f in value.list.func)
    return names


def _check_no_recursion(graph: Graph) -> None:
    """The library's call graph is acyclic: TensorFlow overflows its stack on recursion."""
    calls = {
        name: _callees(body) & graph.functions.keys() for name, body in graph.functions.items()
    }
    done: set[str] = set()
    for start in sorted(calls):
        path = [start]
        pending = [iter(sorted(calls[start]))]
        while pending:
            callee = next(pending[-1], None)
            if callee is None:
                done.add(path.pop())
                pending.pop()
                continue
            if callee in path:
                cycle = " -> ".join([*path[path.index(callee) :], callee])
                raise BnauditError(
                    f"{graph.path}: function {callee!r} calls itself ({cycle}); TensorFlow "
                    "cannot run a recursive function: export the graph again"
                )
            if callee not in done:
                path.append(callee)
                pending.append(iter(sorted(calls[callee])))
