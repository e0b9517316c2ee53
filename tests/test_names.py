"""`scope_of`, `normalize` and `strip_call_suffix` on the names TF1, TF2 and Keras 3 write."""

from __future__ import annotations

import pytest

from bnaudit.names import normalize, scope_of, strip_call_suffix


@pytest.mark.parametrize(
    ("node", "scope"),
    [
        # v1 cond around a fused op, and its numbered twin.
        ("model/bn1/cond/Merge", "model/bn1"),
        ("model/bn1/cond_1/Merge", "model/bn1"),
        ("model/bn1/cond/FusedBatchNormV3_1", "model/bn1"),
        # tf.nn.batch_normalization's decomposition.
        ("model/bn1/batchnorm/add_1", "model/bn1"),
        # A fused op's own scope, numbered or not.
        ("model/bn1/FusedBatchNormV3", "model/bn1"),
        ("model/bn1/FusedBatchNormV3_1/Switch", "model/bn1"),
        ("model/bn1/FusedBatchNorm/x", "model/bn1"),
        # Where lowering a v2 If leaves its Merge.
        ("bn1/cond/output/_5", "bn1"),
        # Lowering a v2 If/While prefixes each branch or body node with `<caller>/.../_N/`.
        ("bn1/cond/then/_0/bn1/cond/FusedBatchNormV3", "bn1"),
        ("while/body/_1/while/bn2/FusedBatchNormV3", "bn2"),
        # The `while` scope tf.while_loop opens, wherever it sits.
        ("model/while/bn2/FusedBatchNormV3", "model/bn2"),
        ("model/while_1/bn2/batchnorm/add_1", "model/bn2"),
        ("model/whiles/bn2/add", "model/whiles/bn2"),
        # Keras 3 traced in a TF2 function.
        ("functional_1/bn1_1/batchnorm/add_1", "functional_1/bn1_1"),
        # Names that only look like noise stay.
        ("model/conditional/Merge", "model/conditional"),
        ("model/cond_x/y", "model/cond_x"),
        ("model/batchnorms/add", "model/batchnorms"),
    ],
)
def test_scope_of(node: str, scope: str) -> None:
    assert scope_of(node) == scope


def test_scope_of_a_name_without_a_scope_is_the_name() -> None:
    assert scope_of("FusedBatchNormV3") == "FusedBatchNormV3"
    assert scope_of("cond/Merge") == "cond/Merge"
    assert scope_of("batchnorm/cond/add_1") == "batchnorm/cond/add_1"


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("bn1/gamma/read", "bn1/gamma"),
        ("bn1/moving_mean/ReadVariableOp", "bn1/moving_mean"),
        ("bn1/gamma/.ATTRIBUTES/VARIABLE_VALUE", "bn1/gamma"),
        ("bn1_1/Cast", "bn1_1"),
        ("bn1_1/Cast_2", "bn1_1"),
        ("functional_1/bn1_1", "bn1_1"),
        ("functional/bn1", "bn1"),
        ("sequential_3/bn", "bn"),
        ("model/bn1/gamma", "bn1/gamma"),
        ("functional_1/bn1_1/Cast_3", "bn1_1"),
        # Lookalikes are kept.
        ("bn/reader", "bn/reader"),
        ("bn/Casting", "bn/Casting"),
        ("my_model/bn", "my_model/bn"),
        ("bn1/gamma/read/x", "bn1/gamma/read/x"),
    ],
)
def test_normalize(name: str, normalized: str) -> None:
    assert normalize(name) == normalized


@pytest.mark.parametrize(
    ("graph_name", "checkpoint_name"),
    [
        ("model/bn1/gamma/read", "model/bn1/gamma"),
        ("model/bn1/moving_variance/ReadVariableOp", "model/bn1/moving_variance"),
        ("model/bn1/gamma", "model/bn1/gamma/.ATTRIBUTES/VARIABLE_VALUE"),
    ],
)
def test_graph_and_checkpoint_names_meet(graph_name: str, checkpoint_name: str) -> None:
    assert normalize(graph_name) == normalize(checkpoint_name)


def test_keras_scope_meets_the_layer_name() -> None:
    """`functional_1/bn1_1` in the graph, `bn1` in the checkpoint (the module's docstring)."""
    assert strip_call_suffix(normalize("functional_1/bn1_1")) == "bn1"


@pytest.mark.parametrize(
    ("name", "stripped"),
    [
        ("bn1_1", "bn1"),
        ("bn_fc_12", "bn_fc"),
        ("bn_1_2", "bn_1"),
        ("bn1", "bn1"),
        ("bn_x", "bn_x"),
        ("model/bn1_1", "model/bn1"),
    ],
)
def test_strip_call_suffix(name: str, stripped: str) -> None:
    assert strip_call_suffix(name) == stripped
