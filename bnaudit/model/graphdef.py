"""The frozen GraphDef (binary `.pb` or text `.pbtxt`): TF1's way to ship a model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.model.graph import Graph, index_graph
from bnaudit.model.sniff import FREEZE_HINT, container_kind, describe_other, read_model_bytes
from bnaudit.model.validate import check_graph, check_graph_def

_OP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_>]*$")


class GraphDefFormat:
    """A frozen graph: binary or text `GraphDef`."""

    name = "frozen GraphDef"

    def recognizes(self, path: Path, data: bytes) -> bool:
        """Anything not recognisably another kind of file: GraphDefs have no signature."""
        return describe_other(path, data) is None

    def load(self, path: Path, data: bytes) -> Graph:
        """Parse, check and index the graph, or raise a BnauditError naming what is wrong."""
        graph_def = parse_graph_def(path, data)
        check_graph_def(path, graph_def)
        graph = index_graph(path, graph_def)
        check_graph(graph)
        return graph


def parse_graph_def(path: Path, data: bytes) -> Any:
    """The bytes as a GraphDef (binary, else text); name what they are instead when not one."""
    graph_def = _parse_binary(data)
    if graph_def is None:
        kind = container_kind(data)
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


def read_graph_def(path: Path) -> Any:
    """The GraphDef message of a frozen graph file (for tools that edit it)."""
    return parse_graph_def(path, read_model_bytes(path))


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
    except (text_format.ParseError, RecursionError, UnicodeDecodeError):
        return None
    return graph_def
