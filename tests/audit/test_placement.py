"""Where a layer inside a called function is read from the top level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnaudit.audit.detect import find_layers
from bnaudit.formats import protos
from bnaudit.model import load_model


@pytest.fixture(scope="module")
def tf() -> Any:
    import tensorflow

    return tensorflow


def _called_bn(tf: Any, path: Path, returned: bool) -> Path:
    """input -> a tf.function called from a TF1 graph (a PartitionedCall node) whose body
    holds a fused BN on constants; it returns (x * 2, bn(x)), or only x * 2."""

    @tf.function
    def inner(x: Any) -> Any:
        values = [tf.constant(np.full(3, v, np.float32)) for v in (1.5, 0.5, 0.25, 2.0)]
        with tf.name_scope("block/bn"):
            y = tf.compat.v1.nn.fused_batch_norm(x, *values, is_training=False)[0]
        return (x * 2.0, y) if returned else (x * 2.0, tf.reduce_sum(y) * 0.0 + x)

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4, 4, 3], name="input")
        doubled, normalized = inner(x)
        tf.identity(doubled + normalized, name="output")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def test_a_layer_returned_by_a_call_is_named_by_that_output(tf: Any, tmp_path: Path) -> None:
    graph = load_model(_called_bn(tf, tmp_path / "called.pb", returned=True))
    (layer,) = find_layers(graph).layers
    call = next(n.name for n in graph.graph_def.node if n.op.endswith("PartitionedCall"))
    assert layer.name == f"{call}:1"  # the second result, not the call's output 0
    assert layer.scope == "block/bn"  # the function's own names, not the call's
    assert layer.fetchable and layer.input == "input:0"


def test_a_layer_its_function_keeps_is_not_fetchable(tf: Any, tmp_path: Path) -> None:
    graph = load_model(_called_bn(tf, tmp_path / "kept.pb", returned=False))
    (layer,) = find_layers(graph).layers
    assert not layer.fetchable and not layer.in_loop
    assert isinstance(graph.graph_def, protos.GraphDef)
