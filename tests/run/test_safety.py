"""The unsafe-op scan: found in the graph and in its library, reasoned, refused by default."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import MODELS, ROOT

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.model import load_model
from bnaudit.run.safety import ALLOWED_OPS, check_safe, scan


def _graph(*ops: tuple[str, str]) -> object:
    graph_def = protos.GraphDef()
    for name, op in ops:
        graph_def.node.add(name=name, op=op)
    return graph_def


def test_fixture_graphs_are_safe() -> None:
    for name in ("tf1_fused_cond", "tf2_if_fused", "keras3_bn", "tf2_function_cond"):
        assert scan(load_model(MODELS / name / "frozen.pb").graph_def) == []


def test_file_ops_in_graph_and_library_are_found() -> None:
    graph_def = _graph(("path", "Const"), ("write", "WriteFile"), ("reader", "TFRecordReaderV2"))
    function = graph_def.library.function.add()
    function.signature.name = "branch"
    function.node_def.add(name="py", op="EagerPyFunc")
    found = scan(graph_def)
    assert [(u.op, u.node, u.function) for u in found] == [
        ("WriteFile", "write", None),
        ("TFRecordReaderV2", "reader", None),
        ("EagerPyFunc", "py", "branch"),
    ]


def test_print_to_a_file_is_unsafe_print_to_stderr_is_not() -> None:
    graph_def = _graph(("p1", "PrintV2"), ("p2", "PrintV2"))
    graph_def.node[0].attr["output_stream"].s = b"stderr"
    graph_def.node[1].attr["output_stream"].s = b"file:///tmp/x.txt"
    assert [u.node for u in scan(graph_def)] == ["p2"]


def test_refusal_is_one_line_naming_ops_and_the_way_out() -> None:
    graph_def = _graph(("a", "ReadFile"), ("b", "ReadFile"), ("c", "SaveV2"))
    with pytest.raises(BnauditError) as raised:
        check_safe(graph_def, "model.pb", allow=False)
    message = str(raised.value)
    assert "\n" not in message
    assert "ReadFile" in message and "SaveV2" in message and "1 more" in message
    assert "--allow-unsafe-ops" in message
    assert len(check_safe(graph_def, "model.pb", allow=True)) == 3


@pytest.mark.parametrize(
    "op",
    [
        "CacheDatasetV2", "DatasetFromGraph", "RecordInput", "MatchingFilesDataset",
        "ImmutableConst", "PyFunc", "Abort", "RemoteCall", "DebugIdentityV2", "FIFOQueueV2",
        "QueueDequeueV2", "CollectiveReduceV2", "InitializeTableFromTextFileV2",
        "WriteScalarSummary", "ScalarSummary", "NoSuchOpAnywhere",
    ],
)  # fmt: skip
def test_ops_off_the_allow_list_are_refused_even_unreachable(op: str) -> None:
    graph_def = _graph(("x", "Const"))
    function = graph_def.library.function.add()
    function.signature.name = "never_called"
    function.node_def.add(name="n", op=op)
    (found,) = scan(graph_def)
    assert (found.op, found.function) == (op, "never_called")
    with pytest.raises(BnauditError, match=op):
        check_safe(graph_def, "g.pb", allow=False)
    assert check_safe(graph_def, "g.pb", allow=True) == [found]


@pytest.mark.parametrize(
    "op",
    [
        "Const", "Identity", "FusedBatchNormV3", "Conv2D", "If", "StatefulPartitionedCall",
        "Switch", "Merge", "ReadVariableOp", "VarHandleOp", "TensorArrayV3", "Assert",
        "StatelessRandomUniformV2", "ResizeBilinear", "NoOp", "_FusedConv2D",
    ],
)  # fmt: skip
def test_ops_that_compute_are_allowed(op: str) -> None:
    assert scan(_graph(("n", op))) == []


def test_the_allow_list_fits_the_installed_tensorflow() -> None:
    """Written from TensorFlow's own op modules: exactly, for the version it was written from
    (tools/make_allowed_ops.py --check); for another version, it still allows no op that
    version files under a family bnaudit refuses (regenerate it after upgrading)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import make_allowed_ops

    written_from = (ROOT / "bnaudit" / "run" / "allowed_ops.txt").read_text().splitlines()[1]
    if written_from == f"# From TensorFlow {make_allowed_ops.tensorflow_version()}.":
        done = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "make_allowed_ops.py"), "--check"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert not ALLOWED_OPS & make_allowed_ops.refused()
