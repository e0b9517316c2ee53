"""Running two GraphDef sides chunk by chunk (what test_pipeline.py checks through whole runs,
here on a graph small enough to know every number), and the one-line errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.run.chunks import ChunkBudget
from bnaudit.run.execute import run_pair
from bnaudit.run.sides import Side

X = np.arange(8, dtype=np.float32).reshape(2, 4) - 3.0
TENSORS = ["a:0", "b:0", "c:0", "d:0"]


@pytest.fixture(scope="module")
def tf() -> Any:
    import tensorflow

    return tensorflow


def _graph_def(tf: Any, factor: float, check: bool = False) -> Any:
    """x -> a = concat(x, x) -> b = sum(a) -> c = b * factor -> d = a + c."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        a = tf.concat([x, x], axis=1, name="a")
        b = tf.reduce_sum(a, axis=1, keepdims=True, name="b")
        if check:
            c = tf.debugging.check_numerics(b * factor, "c is not finite", name="c")
        else:
            c = tf.multiply(b, factor, name="c")
        tf.add(a, c, name="d")
    return protos.GraphDef.FromString(graph.as_graph_def().SerializeToString())


def _max_abs(name: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.max(np.abs(ours - theirs)))


def _run(
    frozen: Side, reference: Side, budget: ChunkBudget | None = None, tensors: list[str] = TENSORS
) -> tuple[Any, list[str]]:
    steps: list[str] = []
    return run_pair(frozen, reference, tensors, _max_abs, steps.append, budget), steps


def test_chunks_resume_from_carried_tensors_and_give_the_same_numbers(tf: Any) -> None:
    frozen = Side(_graph_def(tf, 2.0), {"x": X}, "frozen graph")
    reference = Side(_graph_def(tf, 3.0), {"x": X}, "reference")
    b = 2.0 * X.astype(np.float64).sum(axis=1)  # sum over concat(x, x)
    wanted = {"a:0": 0.0, "b:0": 0.0, "c:0": np.abs(b).max(), "d:0": np.abs(b).max()}

    whole, steps = _run(frozen, reference)
    assert whole.chunks == 1 and whole.values == pytest.approx(wanted)
    assert whole.carried == {"frozen graph": (), "reference": ()}
    assert steps == ["loading TensorFlow…", "running frozen graph", "running reference"]

    chunked, steps = _run(frozen, reference, ChunkBudget(tensors=1))
    assert chunked.chunks == 4 and chunked.values == pytest.approx(wanted)
    # chunk 2 is fed a, chunk 3 b, chunk 4 a and c: every chunk after the first resumes
    fed = ("a:0", "b:0", "a:0", "c:0")
    assert chunked.carried == {"frozen graph": fed, "reference": fed}
    assert steps[-2:] == ["running frozen graph (chunk 4/4)", "running reference (chunk 4/4)"]


def test_a_tensor_the_reference_lacks_is_a_one_line_error(tf: Any) -> None:
    frozen = Side(_graph_def(tf, 2.0), {"x": X}, "frozen graph")
    reference = Side(_graph_def(tf, 2.0), {"x": X}, "reference")
    with pytest.raises(BnauditError) as raised:
        _run(frozen, reference, tensors=["a:0", "a_copy:0"])
    assert "the frozen graph has no tensor a_copy:0" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_graph_tensorflow_cannot_run_is_a_one_line_error(tf: Any) -> None:
    nan = np.full((2, 4), np.nan, np.float32)
    frozen = Side(_graph_def(tf, 2.0), {"x": nan}, "frozen graph")
    reference = Side(_graph_def(tf, 2.0, check=True), {"x": nan}, "reference")
    with pytest.raises(BnauditError) as raised:
        _run(frozen, reference)
    message = str(raised.value)
    assert message.startswith("TensorFlow cannot run the reference (")
    assert "c is not finite" in message
    assert message.endswith("); use --no-run for the static audit")
    assert "\n" not in message


def test_a_graph_tensorflow_cannot_import_is_a_one_line_error(tf: Any) -> None:
    broken = protos.GraphDef()
    broken.node.add(name="x", op="NoSuchOpAnywhere")
    frozen = Side(broken, {}, "frozen graph")
    with pytest.raises(BnauditError) as raised:
        _run(frozen, frozen, tensors=["x:0"])
    message = str(raised.value)
    assert message.startswith("TensorFlow cannot import the frozen graph (")
    assert "NoSuchOpAnywhere" in message and "\n" not in message
