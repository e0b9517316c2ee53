"""Nesting costs linear time: conds inside conds, If branches inside If branches, call trees.

Each graph nests 40 deep, which took hours when every level traced both branches again. The
checks run in a subprocess with a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnaudit.formats import protos
from bnaudit.formats.tensors import encode_tensor

FLOAT, BOOL = protos.DATA_TYPES["DT_FLOAT"], protos.DATA_TYPES["DT_BOOL"]
DEPTH = 40


def _const(nodes: object, name: str, value: object, dtype: int = FLOAT) -> None:
    node = nodes.add(name=name, op="Const")  # type: ignore[attr-defined]
    node.attr["dtype"].type = dtype
    array = np.asarray(value, dtype=bool if dtype == BOOL else np.float32)
    node.attr["value"].tensor.CopyFrom(encode_tensor(array, dtype))


def _fused(graph: object, variance: str) -> None:
    nodes = graph.node  # type: ignore[attr-defined]
    x = nodes.add(name="x", op="Placeholder")
    x.attr["dtype"].type = FLOAT
    for name, value in (("gamma", [1.0, 1.0]), ("beta", [0.0, 0.0]), ("mean", [0.1, 0.2])):
        _const(nodes, name, value)
    bn = nodes.add(name="bn/FusedBatchNormV3", op="FusedBatchNormV3")
    bn.input.extend(["x", "gamma", "beta", "mean", variance])
    bn.attr["is_training"].b = False
    bn.attr["epsilon"].f = 0.001


def _nested_switch_merge(path: Path) -> None:
    """The variance reaches the BN through 40 conds, each Merge joining both branches of the
    same Switch of the previous level's value."""
    graph = protos.GraphDef()
    _const(graph.node, "variance", [np.nan, 1.0])
    _const(graph.node, "flag", False, BOOL)
    previous = "variance"
    for level in range(DEPTH):
        graph.node.add(name=f"s{level}", op="Switch", input=[previous, "flag"])
        graph.node.add(name=f"m{level}", op="Merge", input=[f"s{level}", f"s{level}:1"])
        previous = f"m{level}"
    _fused(graph, previous)
    path.write_bytes(graph.SerializeToString())


def _call_tree(path: Path) -> None:
    """f0 calls f1 twice, f1 calls f2 twice, ...: 2**40 paths from the top to the bottom."""
    graph = protos.GraphDef()
    _const(graph.node, "variance", [np.nan, 1.0])
    for level in range(DEPTH + 1):
        function = graph.library.function.add()
        function.signature.name = f"f{level}"
        function.signature.input_arg.add(name="v", type=FLOAT)
        function.signature.output_arg.add(name="out", type=FLOAT)
        if level == DEPTH:
            function.ret["out"] = "v"
            continue
        for copy in ("a", "b"):
            call = function.node_def.add(name=copy, op="PartitionedCall", input=["v"])
            call.attr["f"].func.name = f"f{level + 1}"
        join = function.node_def.add(
            name="join", op="IdentityN", input=["a:output:0", "b:output:0"]
        )
        del join  # the value flows through copy "a"; "b" doubles the paths
        function.ret["out"] = "a:output:0"
    top = graph.node.add(name="call", op="PartitionedCall", input=["variance"])
    top.attr["f"].func.name = "f0"
    _fused(graph, "call")
    path.write_bytes(graph.SerializeToString())


@pytest.mark.parametrize("build", [_nested_switch_merge, _call_tree])
def test_nesting_forty_deep_is_linear(tmp_path: Path, build: object) -> None:
    graph = tmp_path / "nested.pb"
    build(graph)  # type: ignore[operator]
    done = subprocess.run(
        [sys.executable, "-m", "bnaudit", "list-bn", str(graph), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    (layer,) = json.loads(done.stdout)["layers"]
    # The NaN 40 levels away is found: nothing was cut short.
    assert [f["code"] for f in layer["findings"]] == ["nonfinite-stats"]
