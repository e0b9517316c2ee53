"""The patched reference: the frozen graph with the checkpoint's BN values, in inference mode."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import MODELS

from bnaudit.audit.compare import StaticAudit, audit
from bnaudit.formats.tensors import decode_tensor, encode_tensor
from bnaudit.model.graphdef import read_graph_def
from bnaudit.run.patch import PatchedGraph, patched_reference

_DT_BOOL = 10


@cache
def _static(folder: str, checkpoint: str) -> StaticAudit:
    graph = MODELS / folder / "frozen.pb"
    if not graph.exists():
        graph = MODELS / folder / "folded.pb"
    return audit(MODELS / folder / checkpoint, graph)


def _patch(static: StaticAudit, paired: Any = None) -> PatchedGraph:
    paired = static.paired if paired is None else paired
    return patched_reference(static.graph, static.layers, paired, static.folded)


def _nodes(graph_def: Any) -> dict[str, Any]:
    return {node.name: node for node in graph_def.node}


def _value(graph_def: Any, name: str) -> np.ndarray:
    value = decode_tensor(_nodes(graph_def)[name].attr["value"].tensor)
    assert value is not None
    return value


def test_paired_constants_take_the_checkpoint_values() -> None:
    static = _static("tf1_wrong_ckpt", "ckpt")  # frozen at step 10, the checkpoint is step 20
    before = static.graph.graph_def.SerializeToString()
    patched = _patch(static)
    assert patched.notes == ()
    replaced = set()
    for item in static.paired:
        differs = False
        for role, param in item.layer.params.items():
            assert param.kind == "const"
            wanted = item.values[role]
            assert wanted is not None
            frozen = _value(static.graph.graph_def, param.source)
            differs |= not np.allclose(frozen, wanted, atol=1e-4)
            np.testing.assert_array_equal(_value(patched.graph_def, param.source), wanted)
            replaced.add(param.source)
        assert differs, f"{item.layer.scope}: the fixture should freeze other values"
    assert len(replaced) == 8
    # everything else, names included, is the frozen graph's
    frozen_nodes, patched_nodes = _nodes(static.graph.graph_def), _nodes(patched.graph_def)
    assert frozen_nodes.keys() - {"is_training"} == patched_nodes.keys() - {"is_training"}
    for name, node in frozen_nodes.items():
        if name not in replaced and name != "is_training":
            assert patched_nodes[name] == node, name
    assert static.graph.graph_def.SerializeToString() == before  # the input is not touched


def test_the_checkpoints_own_values_change_nothing_but_the_flag() -> None:
    static = _static("tf1_wrong_ckpt", "ckpt/model.ckpt-10")  # the step the graph was frozen at
    patched = _patch(static)
    frozen_nodes, patched_nodes = _nodes(static.graph.graph_def), _nodes(patched.graph_def)
    changed = [name for name, node in frozen_nodes.items() if patched_nodes[name] != node]
    assert changed == ["is_training"]


@pytest.mark.parametrize(
    ("folder", "checkpoint", "op"),
    [
        ("tf1_fused_cond", "ckpt", "PlaceholderWithDefault"),  # defaults to False
        ("tf1_training_default", "ckpt", "PlaceholderWithDefault"),  # defaults to True
        ("tf1_bare_flag", "ckpt", "Placeholder"),  # no default
        ("tf2_if_training_default", "ckpt", "PlaceholderWithDefault"),  # an If's predicate
    ],
)
def test_training_flags_become_const_false(folder: str, checkpoint: str, op: str) -> None:
    static = _static(folder, checkpoint)
    patched = _patch(static)
    assert patched.forced_flags == ("is_training",)
    flag = _nodes(patched.graph_def)["is_training"]
    assert flag.op == "Const" and list(flag.input) == []
    assert flag.attr["dtype"].type == _DT_BOOL
    value = _value(patched.graph_def, "is_training")
    assert value.dtype == np.bool_ and value.shape == () and not value
    assert _nodes(static.graph.graph_def)["is_training"].op == op  # the input is not touched


def test_a_constant_true_flag_is_forced_false(tmp_path: Path) -> None:
    """A v1 cond whose predicate is a Const True (frozen in training mode) gets it False."""
    graph_def = read_graph_def(MODELS / "tf1_fused_cond" / "frozen.pb")
    flag = _nodes(graph_def)["is_training"]
    flag.ClearField("input")
    flag.ClearField("attr")
    flag.op = "Const"
    flag.attr["dtype"].type = _DT_BOOL
    flag.attr["value"].tensor.CopyFrom(encode_tensor(np.asarray(True), _DT_BOOL))
    path = tmp_path / "const_true.pb"
    path.write_bytes(graph_def.SerializeToString())
    static = audit(MODELS / "tf1_fused_cond" / "ckpt", path)
    assert [layer.mode for layer in static.layers] == ["training", "training"]
    patched = _patch(static)
    assert patched.forced_flags == ("is_training",)
    assert not _value(patched.graph_def, "is_training")
    assert _value(static.graph.graph_def, "is_training")


def test_a_fused_layer_frozen_in_training_uses_the_moving_statistics() -> None:
    static = _static("tf1_const_training", "ckpt")
    patched = _patch(static)
    assert patched.forced_flags == () and patched.notes == ()
    nodes = _nodes(patched.graph_def)
    for item in static.paired:
        (core,) = item.layer.core_nodes
        assert _nodes(static.graph.graph_def)[core].attr["is_training"].b  # untouched input
        fused = nodes[core]
        assert not fused.attr["is_training"].b
        for position, role in ((3, "moving_mean"), (4, "moving_variance")):
            const = nodes[fused.input[position]]
            assert const.op == "Const" and const.attr["dtype"].type == fused.attr["U"].type
            wanted = item.values[role]
            assert wanted is not None
            np.testing.assert_array_equal(_value(patched.graph_def, const.name), wanted)
        gamma = item.layer.params["gamma"].source
        np.testing.assert_array_equal(_value(patched.graph_def, gamma), item.values["gamma"])


def test_a_decomposed_layer_frozen_in_training_uses_the_moving_statistics() -> None:
    """Keras 3 frozen with training=True: `add(variance, eps)` and `mul_2(mean, scale)` read
    the batch's moments; in the reference they read the checkpoint's moving statistics."""
    static = _static("keras3_training_frozen", "model.weights.h5")
    patched = _patch(static)
    assert patched.notes == ()
    frozen, nodes = _nodes(static.graph.graph_def), _nodes(patched.graph_def)
    for item in static.paired:
        base = f"{item.layer.scope}/batchnorm"
        assert frozen[f"{base}/add"].input[0] == f"{item.layer.scope}/moments/Squeeze_1"
        assert frozen[f"{base}/mul_2"].input[0] == f"{item.layer.scope}/moments/Squeeze"
        for user, role in ((f"{base}/add", "moving_variance"), (f"{base}/mul_2", "moving_mean")):
            source = nodes[user].input[0]
            assert nodes[source].op == "Const"
            wanted = item.values[role]
            assert wanted is not None
            np.testing.assert_array_equal(_value(patched.graph_def, source), wanted)


def _folded_value(fold: Any) -> tuple[np.ndarray, np.ndarray]:
    """`kernel * gamma / sqrt(var + eps)` and `beta + (bias - mean) * gamma / sqrt(var + eps)`."""
    stats = fold.stats
    scale = stats["gamma"].astype(np.float64) / np.sqrt(
        stats["moving_variance"].astype(np.float64) + fold.epsilon
    )
    bias = np.zeros_like(scale) if fold.bias is None else fold.bias.astype(np.float64)
    offset = stats["beta"] + (bias - stats["moving_mean"]) * scale
    return fold.kernel * scale, offset  # Conv2D kernel [h, w, in, out]: out is last


def test_folded_bn_is_folded_again_from_the_checkpoint() -> None:
    static = _static("tf1_folded_stale", "ckpt")  # folded at step 10, the checkpoint is step 20
    assert [fold.scope for fold in static.folded] == ["model/bn1", "model/bn2"]
    before = static.graph.graph_def.SerializeToString()
    patched = _patch(static)
    assert patched.notes == () and patched.forced_flags == ()
    for fold in static.folded:
        weights, offset = _folded_value(fold)
        names = (fold.candidate.weights_node, fold.candidate.offset_node)
        for name, wanted in zip(names, (weights, offset), strict=True):
            got = _value(patched.graph_def, name)
            assert got.dtype == np.float32 and got.shape == wanted.shape
            np.testing.assert_allclose(got, wanted, rtol=1e-6, atol=1e-7)
        stale = _value(static.graph.graph_def, fold.candidate.weights_node)
        assert np.abs(stale - weights).max() > 1e-3  # the stale fold really was replaced
    assert static.graph.graph_def.SerializeToString() == before


def test_refolding_from_the_checkpoint_folded_from_gives_the_frozen_fold() -> None:
    """The formula agrees with optimize_for_inference: from step 10 the fold is unchanged."""
    static = _static("tf1_folded_stale", "ckpt/model.ckpt-10")
    patched = _patch(static)
    for fold in static.folded:
        for name in (fold.candidate.weights_node, fold.candidate.offset_node):
            np.testing.assert_allclose(
                _value(patched.graph_def, name),
                _value(static.graph.graph_def, name),
                atol=1e-5,
            )


def test_a_role_the_checkpoint_lacks_keeps_the_frozen_value() -> None:
    static = _static("tf1_trainable_only_saver", "ckpt")
    patched = _patch(static)
    assert patched.notes == tuple(
        f"model/{bn}: the checkpoint has no {role}; the reference keeps the frozen value"
        for bn in ("bn1", "bn2")
        for role in ("moving_mean", "moving_variance")
    )
    for item in static.paired:
        params = item.layer.params
        for role in ("moving_mean", "moving_variance"):
            source = params[role].source
            np.testing.assert_array_equal(
                _value(patched.graph_def, source), _value(static.graph.graph_def, source)
            )
        np.testing.assert_array_equal(
            _value(patched.graph_def, params["gamma"].source), item.values["gamma"]
        )


def test_a_value_of_another_size_keeps_the_frozen_value() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    first = static.paired[0]
    wrong = dataclasses.replace(first, values={**first.values, "gamma": np.ones(3, np.float32)})
    patched = _patch(static, [wrong, *static.paired[1:]])
    assert patched.notes == (
        "model/bn1: gamma has 3 values in the checkpoint and shape (4,) in the graph; the "
        "reference keeps the frozen value",
    )
    source = first.layer.params["gamma"].source
    np.testing.assert_array_equal(
        _value(patched.graph_def, source), _value(static.graph.graph_def, source)
    )


def test_training_layer_without_moving_statistics_stays_in_training() -> None:
    static = _static("tf1_const_training", "ckpt")
    first = static.paired[0]
    lacking = dataclasses.replace(
        first, values={**first.values, "moving_mean": None, "moving_variance": None}
    )
    patched = _patch(static, [lacking, *static.paired[1:]])
    assert patched.notes == (
        "model/bn1: frozen in training mode and the checkpoint has no moving statistics; the "
        "reference keeps it in training mode",
    )
    nodes = _nodes(patched.graph_def)
    assert nodes["model/bn1/FusedBatchNormV3"].attr["is_training"].b
    assert not nodes["model/bn2/FusedBatchNormV3"].attr["is_training"].b
