"""Refuse, before TensorFlow sees it, a graph whose run would need unbounded memory or time.

A graph can be small on disk and still make TensorFlow allocate gigabytes (a constant stored
as one value for billions of elements, a `Fill` of a huge shape) or expand without end at
import (function calls and `If` branches are inlined: a call tree 40 deep is 2**40 copies).
These are found statically here. A loop that never ends cannot be found ahead: the run's
`--timeout` stops it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bnaudit.errors import BnauditError
from bnaudit.formats.tensors import declared_count, decode_tensor, element_size
from bnaudit.model.graph import Body, Graph
from bnaudit.model.runnable import unrunnable

MAX_RUN_TENSOR_BYTES = 512 * 2**20
"""The largest tensor a graph may declare by a constant shape for bnaudit to run it."""
MAX_INLINED_NODES = 1_000_000
"""How many nodes the graph may have once TensorFlow inlines its calls and branches."""
# Ops that allocate a tensor of the shape their input `position` holds (a constant, usually).
_SHAPED = {
    "Fill": 0, "Empty": 0, "BroadcastTo": 1, "RandomUniform": 0, "RandomStandardNormal": 0,
    "TruncatedNormal": 0, "RandomUniformInt": 0, "StatelessRandomUniform": 0,
    "StatelessRandomNormal": 0, "StatelessTruncatedNormal": 0, "StatelessRandomUniformV2": 0,
    "StatelessRandomNormalV2": 0, "StatelessTruncatedNormalV2": 0, "Zeros": 0, "Ones": 0,
}  # fmt: skip


def check_runnable(graph: Graph, label: str) -> None:
    """A BnauditError when TensorFlow would refuse `graph` (`model.runnable`), or running it
    would take unbounded memory or expand without end."""
    reasons = unrunnable(graph)
    if reasons:
        raise BnauditError(
            f"TensorFlow cannot run {label}: {reasons[0]}"
            + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
            + "; use --no-run for the static audit, or freeze again"
        )
    for body in (graph.top, *graph.functions.values()):
        for node in body.nodes.values():
            size = _declared_bytes(body, node)
            if size > MAX_RUN_TENSOR_BYTES:
                limit = MAX_RUN_TENSOR_BYTES // 2**20
                raise BnauditError(
                    f"{label}: {node.op} {node.name!r} makes a tensor of {size / 2**20:,.0f} MB, "
                    f"over the {limit} MB bnaudit lets a run allocate at once: use --no-run for "
                    "the static audit, or --allow-unsafe-ops to run it anyway"
                )
    nodes = inlined_size(graph)
    if nodes > MAX_INLINED_NODES:
        raise BnauditError(
            f"{label}: its calls and branches nest so that TensorFlow would inline them into "
            f"{nodes:,} nodes; bnaudit runs graphs of at most {MAX_INLINED_NODES:,}: use "
            "--no-run for the static audit, or --allow-unsafe-ops to run it anyway"
        )


def _declared_bytes(body: Body, node: Any) -> int:
    """The bytes a constant or a shape-taking op declares, without expanding anything."""
    if node.op == "Const" and "value" in node.attr:
        tensor = node.attr["value"].tensor
        return declared_count(tensor) * (element_size(int(tensor.dtype) % 100) or 1)
    position = _SHAPED.get(node.op)
    inputs = body.inputs(node)
    if position is None or position >= len(inputs):
        return 0
    shape_node = body.nodes.get(inputs[position].node)
    if (
        shape_node is None
        or shape_node.op != "Const"
        or declared_count(shape_node.attr["value"].tensor) > 64
    ):
        return 0
    shape = decode_tensor(shape_node.attr["value"].tensor, shape_node.name)
    if shape is None or shape.dtype.kind not in "iu":
        return 0
    dtype = node.attr["dtype"].type if "dtype" in node.attr else node.attr["T"].type
    return math.prod(max(0, int(d)) for d in np.asarray(shape).reshape(-1)) * (
        element_size(int(dtype) % 100) or 4
    )


def inlined_size(graph: Graph) -> int:
    """Nodes of the top-level graph once every call and branch is inlined (each function's
    size computed once: the call graph is acyclic, `model.validate` checked it)."""
    sizes: dict[str | None, int] = {}
    order = _callees_first(graph)
    for name in order:
        body = graph.functions[name]
        sizes[name] = _size(body, sizes)
    return _size(graph.top, sizes)


def _size(body: Body, sizes: dict[str | None, int]) -> int:
    total = len(body.nodes)
    for node in body.nodes.values():
        for callee in _called(node):
            total += sizes.get(callee, 0)
            if total > MAX_INLINED_NODES:
                return total  # far enough: no need to count to 2**40
    return total


def _called(node: Any) -> list[str]:
    names = []
    for value in node.attr.values():
        kind = value.WhichOneof("value")
        if kind == "func":
            names.append(value.func.name)
        elif kind == "list":
            names += [f.name for f in value.list.func]
    return names


def _callees_first(graph: Graph) -> list[str]:
    """The library's functions, each after every function it calls."""
    done: list[str] = []
    seen: set[str] = set()
    for start in sorted(graph.functions):
        pending = [(start, iter(_called_functions(graph, start)))]
        if start in seen:
            continue
        seen.add(start)
        while pending:
            name, callees = pending[-1]
            callee = next(callees, None)
            if callee is None:
                done.append(name)
                pending.pop()
            elif callee not in seen:
                seen.add(callee)
                pending.append((callee, iter(_called_functions(graph, callee))))
    return done


def _called_functions(graph: Graph, name: str) -> list[str]:
    names = {c for node in graph.functions[name].nodes.values() for c in _called(node)}
    return sorted(names & graph.functions.keys())
