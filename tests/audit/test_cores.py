"""`find_cores` and `merged_pairs` on GraphDefs built by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bnaudit.audit.cores import Core, find_cores, float32_value, merged_pairs
from bnaudit.formats import protos
from bnaudit.formats.tensors import encode_tensor
from bnaudit.model.graph import Body, TensorRef, index_graph

F32 = protos.DATA_TYPES["DT_FLOAT"]


def _node(graph: Any, name: str, op: str, *inputs: str) -> Any:
    return graph.node.add(name=name, op=op, input=list(inputs))


def _const(graph: Any, name: str, value: Any) -> Any:
    node = _node(graph, name, "Const")
    node.attr["dtype"].type = F32
    node.attr["value"].tensor.CopyFrom(encode_tensor(np.asarray(value), F32))
    return node


def _top(graph: Any) -> Body:
    return index_graph(Path("hand.pb"), graph).top


def _params(graph: Any, scope: str, roles: tuple[str, ...]) -> None:
    for role in roles:
        _const(graph, f"{scope}/{role}", [0.5, 2.0])
        _node(graph, f"{scope}/{role}/read", "Identity", f"{scope}/{role}")


def _inputs(core: Core) -> dict[str, str | None]:
    return {role: None if ref is None else ref.node for role, ref in core.inputs.items()}


# Fused ops.


def _fused(graph: Any, name: str, op: str = "FusedBatchNormV3", **attrs: Any) -> Any:
    node = _node(
        graph, name, op, "x", "bn/gamma/read", "bn/beta/read", "bn/mean/read", "bn/var/read"
    )
    for key, value in attrs.items():
        if isinstance(value, bool):
            node.attr[key].b = value
        elif isinstance(value, float):
            node.attr[key].f = value
        else:
            node.attr[key].s = value.encode()
    return node


def _fused_graph() -> Any:
    graph = protos.GraphDef()
    _node(graph, "x", "Placeholder")
    _params(graph, "bn", ("gamma", "beta", "mean", "var"))
    return graph


def test_fused_op_with_its_attributes() -> None:
    graph = _fused_graph()
    _fused(graph, "bn/FusedBatchNormV3", epsilon=0.001, data_format="NCHW", is_training=False)
    (core,) = find_cores(_top(graph), ())
    assert (core.op, core.output, core.node.name) == (
        "FusedBatchNormV3",
        "bn/FusedBatchNormV3",
        "bn/FusedBatchNormV3",
    )
    assert _inputs(core) == {
        "gamma": "bn/gamma/read",
        "beta": "bn/beta/read",
        "moving_mean": "bn/mean/read",
        "moving_variance": "bn/var/read",
    }
    # The attr is a float32: read back as the decimal the user wrote.
    assert core.epsilon == 0.001
    assert core.data_format == "NCHW"
    assert core.is_training is False
    assert core.stack == ()


def test_fused_op_defaults_when_attributes_are_absent() -> None:
    for op in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"):
        graph = _fused_graph()
        _fused(graph, "bn/op", op)
        (core,) = find_cores(_top(graph), ())
        assert core.op == op
        assert (core.epsilon, core.data_format, core.is_training) == (1e-4, "NHWC", True)


def test_float32_value_gives_the_short_decimal() -> None:
    assert float32_value(np.float32(1e-5)) == 1e-5
    assert float32_value(0.0010000000474974513) == 0.001
    assert float32_value(np.float32(0.1)) == 0.1


# The decomposition.


def _decomposed(
    gamma: bool = True, beta: bool = True, eps: str = "const", x_op: str = "Placeholder"
) -> Any:
    """`tf.nn.batch_normalization` as Keras 3 writes it, parameters optionally off."""
    graph = protos.GraphDef()
    if x_op == "Neg":
        _node(graph, "x/input", "Placeholder")
        _node(graph, "x", "Neg", "x/input")
    else:
        _node(graph, "x", x_op)
    roles = ("mean", "var") + (("gamma",) if gamma else ()) + (("beta",) if beta else ())
    _params(graph, "bn", roles)
    b = "bn/batchnorm"
    if eps == "const":
        _const(graph, f"{b}/add/y", 1e-5)
    else:
        _node(graph, f"{b}/add/y", "Placeholder")
    _node(graph, f"{b}/add", "AddV2", "bn/var/read", f"{b}/add/y")
    _node(graph, f"{b}/Rsqrt", "Rsqrt", f"{b}/add")
    scale = f"{b}/Rsqrt"
    if gamma:
        _node(graph, f"{b}/mul", "Mul", f"{b}/Rsqrt", "bn/gamma/read")
        scale = f"{b}/mul"
    _node(graph, f"{b}/mul_1", "Mul", "x", scale)
    if beta:
        _node(graph, f"{b}/mul_2", "Mul", "bn/mean/read", scale)
        _node(graph, f"{b}/sub", "Sub", "bn/beta/read", f"{b}/mul_2")
        shift = f"{b}/sub"
    else:
        _node(graph, f"{b}/Neg", "Neg", "bn/mean/read")
        _node(graph, f"{b}/mul_2", "Mul", f"{b}/Neg", scale)
        shift = f"{b}/mul_2"
    _node(graph, f"{b}/add_1", "AddV2", f"{b}/mul_1", shift)
    return graph


def _one_core(graph: Any) -> Core:
    cores = find_cores(_top(graph), ())
    assert len(cores) == 1, cores
    return cores[0]


def test_decomposition_with_gamma_and_beta() -> None:
    core = _one_core(_decomposed())
    assert (core.op, core.output, core.node.name) == (
        "decomposed",
        "bn/batchnorm/add_1",
        "bn/batchnorm/Rsqrt",
    )
    assert _inputs(core) == {
        "gamma": "bn/gamma/read",
        "beta": "bn/beta/read",
        "moving_mean": "bn/mean/read",
        "moving_variance": "bn/var/read",
    }
    assert core.epsilon == 1e-5
    assert (core.data_format, core.is_training) == (None, None)


def test_decomposition_without_gamma() -> None:
    core = _one_core(_decomposed(gamma=False))
    assert core.output == "bn/batchnorm/add_1"
    assert _inputs(core) == {
        "gamma": None,
        "beta": "bn/beta/read",
        "moving_mean": "bn/mean/read",
        "moving_variance": "bn/var/read",
    }


def test_decomposition_without_beta_reads_the_mean_behind_neg() -> None:
    core = _one_core(_decomposed(beta=False))
    assert core.output == "bn/batchnorm/add_1"
    assert _inputs(core) == {
        "gamma": "bn/gamma/read",
        "beta": None,
        "moving_mean": "bn/mean/read",
        "moving_variance": "bn/var/read",
    }


def test_decomposition_without_gamma_or_beta() -> None:
    core = _one_core(_decomposed(gamma=False, beta=False))
    assert _inputs(core) == {
        "gamma": None,
        "beta": None,
        "moving_mean": "bn/mean/read",
        "moving_variance": "bn/var/read",
    }


def test_epsilon_that_is_not_a_constant_is_unknown() -> None:
    assert _one_core(_decomposed(eps="placeholder")).epsilon is None


def test_input_produced_by_neg_is_not_taken_for_the_mean() -> None:
    """`x` itself comes out of a Neg: the Sub still names beta and the mean."""
    core = _one_core(_decomposed(x_op="Neg"))
    assert _inputs(core) == {
        "gamma": "bn/gamma/read",
        "beta": "bn/beta/read",
        "moving_mean": "bn/mean/read",
        "moving_variance": "bn/var/read",
    }


def test_rsqrt_outside_a_batch_norm_is_not_a_core() -> None:
    graph = protos.GraphDef()
    _node(graph, "x", "Placeholder")
    _node(graph, "r", "Rsqrt", "x")  # not fed by an add
    _const(graph, "one", 1.0)
    _node(graph, "s", "AddV2", "x", "one")
    _node(graph, "r2", "Rsqrt", "s")  # an add, but no normalization hangs on it
    _node(graph, "y", "Mul", "x", "r2")
    assert find_cores(_top(graph), ()) == []


# Two fused ops behind a v1 Merge.


def _merged_graph(through_identity: bool, second_index: int = 0) -> Any:
    graph = _fused_graph()
    _node(graph, "is_training", "Placeholder")
    _fused(graph, "bn/cond/FusedBatchNormV3", is_training=True)
    _fused(graph, "bn/cond/FusedBatchNormV3_1", is_training=False)
    first, second = "bn/cond/FusedBatchNormV3", f"bn/cond/FusedBatchNormV3_1:{second_index}"
    if through_identity:
        _node(graph, "bn/cond/Identity", "Identity", first)
        first = "bn/cond/Identity"
    _node(graph, "bn/cond/Merge", "Merge", second, first)
    return graph


def test_merged_pairs_joins_two_fused_ops() -> None:
    for through_identity in (False, True):
        body = _top(_merged_graph(through_identity))
        cores = find_cores(body, ())
        assert [c.node.name for c in cores] == [
            "bn/cond/FusedBatchNormV3",
            "bn/cond/FusedBatchNormV3_1",
        ]
        ((first, second, merge),) = merged_pairs(body, cores)
        # In the Merge's input order.
        assert (first.node.name, second.node.name, merge) == (
            "bn/cond/FusedBatchNormV3_1",
            "bn/cond/FusedBatchNormV3",
            "bn/cond/Merge",
        )
        assert (first.is_training, second.is_training) == (False, True)


def test_merge_of_a_batch_statistic_output_is_not_a_pair() -> None:
    body = _top(_merged_graph(False, second_index=1))
    assert merged_pairs(body, find_cores(body, ())) == []


def test_merge_of_one_fused_op_with_itself_is_not_a_pair() -> None:
    graph = _fused_graph()
    _fused(graph, "bn/FusedBatchNormV3")
    _node(graph, "bn/Identity", "Identity", "bn/FusedBatchNormV3")
    _node(graph, "bn/Merge", "Merge", "bn/FusedBatchNormV3", "bn/Identity")
    body = _top(graph)
    assert merged_pairs(body, find_cores(body, ())) == []


def test_merge_pairs_only_fused_cores() -> None:
    body = _top(_merged_graph(False))
    cores = find_cores(body, ())
    assert merged_pairs(body, cores[:1]) == []
    assert body.inputs(body.nodes["bn/cond/Merge"])[0] == TensorRef("bn/cond/FusedBatchNormV3_1", 0)
