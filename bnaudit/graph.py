"""Read a frozen GraphDef from disk and index it: nodes, consumers, functions, graph order."""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from bnaudit import protos
from bnaudit.errors import BnauditError

_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")  # LevelDB table magic, little-endian
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_DATA_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}$")
_OP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_>]*$")
FREEZE_HINT = "freeze it with convert_variables_to_constants(_v2) and pass the .pb"

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


def _body_of_function(function: Any) -> Body:
    nodes = {n.name: n for n in function.node_def}
    body = Body(name=function.signature.name, nodes=nodes)
    body.args = [a.name for a in function.signature.input_arg]
    body.rets = [body.parse_ref(function.ret[a.name]) for a in function.signature.output_arg]
    return body


def load_graph(path: Path) -> Graph:
    """Read a frozen graph (binary `.pb` or text `.pbtxt`), or raise a BnauditError."""
    graph_def = read_graph_def(path)
    top = Body(name=None, nodes={n.name: n for n in graph_def.node})
    functions = {f.signature.name: _body_of_function(f) for f in graph_def.library.function}
    _check_references(path, top)
    for body in (top, *functions.values()):
        _check_arity(path, body)
    return Graph(path=path, graph_def=graph_def, top=top, functions=functions)


def _check_references(path: Path, top: Body) -> None:
    for name, node in top.nodes.items():
        for text in node.input:
            producer = text.lstrip("^").split(":")[0]
            if producer not in top.nodes:
                raise BnauditError(
                    f"{path}: node {name!r} reads {producer!r}, which the graph does not "
                    "contain; the file looks truncated or cut from a larger graph: "
                    "export it again"
                )


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
    **dict.fromkeys(("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"), 5),
}  # fmt: skip


def _check_arity(path: Path, body: Body) -> None:
    for name, node in body.nodes.items():
        need = _MIN_INPUTS.get(node.op, 0)
        have = sum(1 for text in node.input if not text.startswith("^"))
        if have < need:
            where = f" in function {body.name}" if body.name else ""
            raise BnauditError(
                f"{path}: node {name!r}{where} ({node.op}) has {have} input(s) where the op "
                f"takes {need}; the graph is damaged: export it again"
            )


def read_graph_def(path: Path) -> Any:
    """Parse the file as a GraphDef; name what it is instead when it is not one."""
    if not path.exists():
        raise BnauditError(f"{path}: no such file; pass a frozen graph (.pb or .pbtxt)")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise BnauditError(
                f"{path} is a SavedModel directory, not a frozen graph: {FREEZE_HINT}"
            )
        raise BnauditError(f"{path} is a directory; pass a frozen graph file (.pb or .pbtxt)")
    data = path.read_bytes()
    if not data:
        raise BnauditError(f"{path} is empty; pass a frozen graph (.pb or .pbtxt)")
    _reject_known_non_graphs(path, data)
    graph_def = _parse_binary(data)
    if graph_def is None:
        kind = _container_kind(data)
        if kind:
            raise BnauditError(f"{path} is {kind}, not a frozen graph: {FREEZE_HINT}")
        graph_def = _parse_text(data)
    if graph_def is None:
        raise BnauditError(
            f"{path} is not a GraphDef (neither binary nor text parses; "
            "truncated or corrupt?): pass a frozen graph (.pb or .pbtxt)"
        )
    if not graph_def.node:
        raise BnauditError(f"{path} holds a GraphDef with no nodes; pass a frozen graph")
    return graph_def


def _reject_known_non_graphs(path: Path, data: bytes) -> None:
    """Raise for files that are recognisably something else than a GraphDef."""
    name = path.name
    if len(data) >= 48 and data[-8:] == _TABLE_MAGIC:
        raise BnauditError(
            f"{path} is a checkpoint index, not a graph: pass the frozen .pb as the graph "
            "(and the checkpoint prefix to `bnaudit compare`)"
        )
    if _DATA_SHARD.search(name):
        raise BnauditError(f"{path} is a checkpoint data file, not a graph; pass the frozen .pb")
    if data.startswith(_HDF5_MAGIC):
        raise BnauditError(f"{path} is an HDF5 (Keras weights) file, not a graph: {FREEZE_HINT}")
    if data.startswith(_ZIP_MAGIC):
        raise BnauditError(f"{path} is a zip archive (a .keras model?), not a graph: {FREEZE_HINT}")
    if name == "saved_model.pb" or name.endswith(".meta") or data[:1] == b"\x08":
        kind = _container_kind(data)
        if kind:
            raise BnauditError(f"{path} is {kind}, not a frozen graph: {FREEZE_HINT}")


def _container_kind(data: bytes) -> str | None:
    """'a SavedModel' / 'a MetaGraphDef (.meta)' when the bytes parse as one with a graph."""
    for kind, cls in (
        ("a SavedModel", protos.SavedModel),
        ("a MetaGraphDef", protos.MetaGraphDef),
    ):
        message = cls()
        try:
            message.ParseFromString(data)
        except DecodeError:
            continue
        graphs = (
            [m.graph_def for m in message.meta_graphs]
            if kind == "a SavedModel"
            else [message.graph_def]
        )
        if any(g.node for g in graphs):
            return kind + (" (.meta)" if kind == "a MetaGraphDef" else "")
    return None


def _parse_binary(data: bytes) -> Any | None:
    graph_def = protos.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None
    if not all(n.name and _OP_NAME.match(n.op) for n in graph_def.node):
        return None
    return graph_def


def _parse_text(data: bytes) -> Any | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    graph_def = protos.GraphDef()
    try:
        text_format.Parse(text, graph_def, allow_unknown_field=True)
    except text_format.ParseError:
        return None
    return graph_def
