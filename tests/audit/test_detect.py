"""Detection on the training graphs TensorFlow wrote beside the checkpoints (`.meta`).

Training graphs hang gradient ops on every BN tensor; each layer of the frozen graph must
still be found there, under the same scope, reading variables.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODELS, expected

from bnaudit.api import list_bn
from bnaudit.formats import protos

METAS = sorted(MODELS.glob("*/ckpt/*.meta"))


@pytest.mark.parametrize("meta_path", METAS, ids=[p.parts[-3] for p in METAS])
def test_training_graph_has_the_frozen_layers(meta_path: Path, tmp_path: Path) -> None:
    meta = protos.MetaGraphDef.FromString(meta_path.read_bytes())
    graph = tmp_path / "train_graph.pb"
    graph.write_bytes(meta.graph_def.SerializeToString())
    training = list_bn(graph)
    folder = meta_path.parent.parent
    frozen = [layer["scope"] for layer in expected(folder)["list_bn"]["layers"]]
    if not frozen:  # a folded graph: its BN layers live on in the training graph only
        assert training.layers
        return
    assert [layer.scope for layer in training.layers] == frozen
    for layer in training.layers:
        kinds = {p.kind for p in layer.params.values()}
        assert kinds <= {"variable", "absent", "batch"}, layer.scope


def _const(
    graph: protos.GraphDef, name: str, values: list[float] | list[int], dtype: int = 1
) -> None:
    node = graph.node.add(name=name, op="Const")
    node.attr["dtype"].type = dtype
    tensor = node.attr["value"].tensor
    tensor.dtype = dtype
    tensor.tensor_shape.dim.add(size=len(values))
    if dtype == 1:
        tensor.float_val.extend(values)
    else:
        tensor.int_val.extend(values)


def _decomposed_graph(reshape_to: list[int] | None) -> protos.GraphDef:
    """tf.nn.batch_normalization's decomposition, parameters optionally reshaped (Keras axis=1)."""
    graph = protos.GraphDef()
    graph.node.add(name="x", op="Placeholder").attr["dtype"].type = 1
    if reshape_to:
        _const(graph, "bn/shape", reshape_to, dtype=3)
    for role, value in (("mean", 0.5), ("var", 2.0), ("gamma", 1.5), ("beta", 0.1)):
        _const(graph, f"bn/{role}", [value] * 4)
        if reshape_to:
            graph.node.add(name=f"bn/{role}_r", op="Reshape", input=[f"bn/{role}", "bn/shape"])
        else:
            graph.node.add(name=f"bn/{role}_r", op="Identity", input=[f"bn/{role}"])
    _const(graph, "bn/batchnorm/add/y", [0.001])
    for name, op, inputs in (
        ("add", "AddV2", ["bn/var_r", "bn/batchnorm/add/y"]),
        ("Rsqrt", "Rsqrt", ["bn/batchnorm/add"]),
        ("mul", "Mul", ["bn/batchnorm/Rsqrt", "bn/gamma_r"]),
        ("mul_1", "Mul", ["x", "bn/batchnorm/mul"]),
        ("mul_2", "Mul", ["bn/mean_r", "bn/batchnorm/mul"]),
        ("sub", "Sub", ["bn/beta_r", "bn/batchnorm/mul_2"]),
        ("add_1", "AddV2", ["bn/batchnorm/mul_1", "bn/batchnorm/sub"]),
    ):
        graph.node.add(name=f"bn/batchnorm/{name}", op=op, input=inputs)
    return graph


@pytest.mark.parametrize(
    ("reshape_to", "layout"), [(None, "channels_last"), ([1, 4, 1, 1], "channels_first")]
)
def test_decomposed_layout_follows_the_parameter_reshape(
    reshape_to: list[int] | None, layout: str, tmp_path: Path
) -> None:
    path = tmp_path / "bn.pb"
    path.write_bytes(_decomposed_graph(reshape_to).SerializeToString())
    (layer,) = list_bn(path).layers
    assert (layer.scope, layer.op, layer.mode, layer.channels) == (
        "bn",
        "decomposed",
        "inference",
        4,
    )
    assert layer.data_format == layout
    assert layer.epsilon == pytest.approx(0.001)
