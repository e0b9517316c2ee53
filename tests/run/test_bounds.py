"""Bounds checked before a run: tensors a graph declares, and what inlining would make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.formats.tensors import encode_tensor
from bnaudit.model.graph import index_graph
from bnaudit.run.bounds import MAX_INLINED_NODES, check_runnable, inlined_size

FLOAT, INT32 = protos.DATA_TYPES["DT_FLOAT"], protos.DATA_TYPES["DT_INT32"]


def _graph(graph_def: object) -> object:
    return index_graph(Path("g.pb"), graph_def)


def _const(graph_def: object, name: str, value: object, dtype: int = FLOAT) -> object:
    node = graph_def.node.add(name=name, op="Const")  # type: ignore[attr-defined]
    node.attr["dtype"].type = dtype
    array = np.asarray(value, dtype=np.int32 if dtype == INT32 else np.float32)
    node.attr["value"].tensor.CopyFrom(encode_tensor(array, dtype))
    return node


def test_a_fill_constant_of_gigabytes_is_refused() -> None:
    graph_def = protos.GraphDef()
    node = graph_def.node.add(name="huge", op="Const")
    node.attr["dtype"].type = FLOAT
    tensor = node.attr["value"].tensor
    tensor.dtype = FLOAT
    tensor.tensor_shape.dim.add(size=2_000_000_000)
    tensor.float_val.append(1.0)
    with pytest.raises(BnauditError, match="Const 'huge' makes a tensor of 7,629 MB"):
        check_runnable(_graph(graph_def), "g.pb")  # type: ignore[arg-type]


@pytest.mark.parametrize(("shape", "refused"), [([1024, 1024, 200], True), ([1024, 1024], False)])
def test_fill_is_refused_by_the_shape_it_is_given(shape: list[int], refused: bool) -> None:
    graph_def = protos.GraphDef()
    _const(graph_def, "dims", shape, INT32)
    _const(graph_def, "one", 1.0)
    fill = graph_def.node.add(name="fill", op="Fill", input=["dims", "one"])
    fill.attr["T"].type = FLOAT
    if refused:
        with pytest.raises(BnauditError, match="Fill 'fill' makes a tensor of 800 MB"):
            check_runnable(_graph(graph_def), "g.pb")  # type: ignore[arg-type]
    else:
        check_runnable(_graph(graph_def), "g.pb")  # type: ignore[arg-type]


def _call_tree(depth: int, width: int) -> object:
    graph_def = protos.GraphDef()
    for level in range(depth + 1):
        function = graph_def.library.function.add()
        function.signature.name = f"f{level}"
        function.node_def.add(name="n", op="NoOp")
        if level < depth:
            for copy in range(width):
                call = function.node_def.add(name=f"c{copy}", op="PartitionedCall")
                call.attr["f"].func.name = f"f{level + 1}"
    top = graph_def.node.add(name="call", op="PartitionedCall")
    top.attr["f"].func.name = "f0"
    return graph_def


def test_inlined_size_counts_every_copy() -> None:
    # f3 has 1 node; f2 = 3 + 2*1; f1 = 3 + 2*5; f0 = 3 + 2*13; the top: 1 + 29.
    assert inlined_size(_graph(_call_tree(3, 2))) == 30  # type: ignore[arg-type]


def test_a_call_tree_forty_deep_is_refused_quickly() -> None:
    graph = _graph(_call_tree(40, 2))
    assert inlined_size(graph) > MAX_INLINED_NODES  # type: ignore[arg-type]
    with pytest.raises(BnauditError, match="would inline them into"):
        check_runnable(graph, "g.pb")  # type: ignore[arg-type]
