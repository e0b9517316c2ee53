"""A deployed model as bnaudit sees it: the top-level graph and its function library, indexed.

Every model loader produces a `Graph`; detection, folding and the run read only this.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

# Output argument names of the ops whose outputs a function body names (`node:arg:index`).
_OUTPUT_ARGS = {
    "Switch": ["output_false", "output_true"],
    "RefSwitch": ["output_false", "output_true"],
    "Merge": ["output", "value_index"],
    "FusedBatchNorm": [
        "y",
        "batch_mean",
        "batch_variance",
        "reserve_space_1",
        "reserve_space_2",
    ],
}
for _op in ("FusedBatchNormV2", "FusedBatchNormV3"):
    _OUTPUT_ARGS[_op] = [*_OUTPUT_ARGS["FusedBatchNorm"], "reserve_space_3"]


@dataclass(frozen=True)
class TensorRef:
    """One output of a node (or one argument of a function) inside a body."""

    node: str
    """Name of the node, or of the function argument."""
    index: int
    """Output index; 0 for a function argument."""


@dataclass
class Body:
    """The nodes of the top-level graph or of one library function, indexed by name."""

    name: str | None
    """Function name; None for the top-level graph."""
    nodes: dict[str, Any]
    """Node name -> NodeDef, in file order."""
    args: list[str] = field(default_factory=list)
    """A function's input argument names, in order."""
    rets: list[TensorRef] = field(default_factory=list)
    """A function's returned tensors, in output order."""

    def parse_ref(self, text: str) -> TensorRef:
        """Parse an input string (`node`, `node:1`, or in functions `node:arg:1`)."""
        parts = text.split(":")
        if len(parts) == 1:
            return TensorRef(parts[0], 0)
        if len(parts) == 2:
            return TensorRef(parts[0], int(parts[1]))
        node, arg, index = parts[0], parts[1], int(parts[2])
        op = self.nodes[node].op if node in self.nodes else ""
        names = _OUTPUT_ARGS.get(op)
        if names and arg in names:
            return TensorRef(node, names.index(arg) + index)
        return TensorRef(node, index)

    def inputs(self, node: Any) -> list[TensorRef]:
        """A node's data inputs (control inputs dropped)."""
        return [self.parse_ref(i) for i in node.input if not i.startswith("^")]

    @cached_property
    def consumers(self) -> dict[str, list[tuple[str, int, int]]]:
        """Node name -> [(consumer name, consumer input position, output index used)]."""
        result: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        for name, node in self.nodes.items():
            for position, ref in enumerate(self.inputs(node)):
                result[ref.node].append((name, position, ref.index))
        return result


@dataclass
class Graph:
    """A GraphDef read from `path`, with its library functions as bodies."""

    path: Path
    graph_def: Any
    top: Body
    functions: dict[str, Body]

    @cached_property
    def order(self) -> dict[str, int]:
        """Position of each top-level node in a topological order (file order breaks ties)."""
        nodes = self.top.nodes
        users: dict[str, list[str]] = defaultdict(list)
        pending = dict.fromkeys(nodes, 0)
        for name, node in nodes.items():
            for text in node.input:
                users[text.lstrip("^").split(":")[0]].append(name)
                pending[name] += 1
        ready = deque(name for name, count in pending.items() if count == 0)
        position: dict[str, int] = {}
        while ready:
            name = ready.popleft()
            position[name] = len(position)
            for user in users[name]:
                pending[user] -= 1
                if pending[user] == 0:
                    ready.append(user)
        for name in nodes:  # nodes on cycles (v1 while loops) keep file order, at the end
            position.setdefault(name, len(position))
        return position


def body_of_function(function: Any) -> Body:
    """A library function (`FunctionDef`) as a body: nodes, arguments, returned tensors."""
    nodes = {n.name: n for n in function.node_def}
    body = Body(name=function.signature.name, nodes=nodes)
    body.args = [a.name for a in function.signature.input_arg]
    body.rets = [body.parse_ref(function.ret[a.name]) for a in function.signature.output_arg]
    return body


def index_graph(path: Path, graph_def: Any) -> Graph:
    """Index a GraphDef's nodes and library functions (no checks)."""
    top = Body(name=None, nodes={n.name: n for n in graph_def.node})
    functions = {f.signature.name: body_of_function(f) for f in graph_def.library.function}
    return Graph(path=path, graph_def=graph_def, top=top, functions=functions)
