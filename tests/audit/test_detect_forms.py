"""Detection of the BN forms issue 9 named, on small GraphDefs built by hand: BN written as
plain arithmetic (and normalizations that are not BN), BN inside While loops (function bodies
and v1 loop frames), BN in one branch of an If."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes import BOOL, F32, I32
from fakes import const as _const
from fakes import node as _node

from bnaudit.audit.detect import BnLayer, find_layers
from bnaudit.formats import protos
from bnaudit.model.graph import index_graph


def _layers(graph: Any) -> list[BnLayer]:
    return find_layers(index_graph(Path("hand.pb"), graph)).layers


def _params(nodes: Any, scope: str) -> None:
    """gamma, beta, mean, var Consts of 4 channels, each read through an Identity."""
    for role, value in (("gamma", 1.5), ("beta", 0.1), ("mean", 0.5), ("var", 2.0)):
        _const(nodes, f"{scope}/{role}", [value] * 4)
        _node(nodes, f"{scope}/{role}/read", "Identity", f"{scope}/{role}")


# BN as arithmetic: (x - mean) / sqrt(var + eps) * gamma + beta and its variants.

_FORMS = {
    # name: (ops in order as (node, op, inputs), output, has gamma, has beta)
    "div": (
        [("norm", "RealDiv", ["bn/sub", "bn/Sqrt"]), ("mul", "Mul", ["bn/norm", "bn/gamma/read"]),
         ("out", "AddV2", ["bn/mul", "bn/beta/read"])],
        "bn/out", True, True,
    ),
    "rsqrt": (
        [("norm", "Mul", ["bn/sub", "bn/Rsqrt"]), ("mul", "Mul", ["bn/gamma/read", "bn/norm"]),
         ("out", "AddV2", ["bn/beta/read", "bn/mul"])],
        "bn/out", True, True,
    ),
    "rsqrt_times_gamma_first": (
        [("scale", "Mul", ["bn/Rsqrt", "bn/gamma/read"]), ("out0", "Mul", ["bn/sub", "bn/scale"]),
         ("out", "Add", ["bn/out0", "bn/beta/read"])],
        "bn/out", True, True,
    ),
    "gamma_before_dividing": (
        [("mul", "Mul", ["bn/sub", "bn/gamma/read"]), ("norm", "RealDiv", ["bn/mul", "bn/Sqrt"]),
         ("out", "AddV2", ["bn/norm", "bn/beta/read"])],
        "bn/out", True, True,
    ),
    "divide_no_gamma_no_beta": (
        [("out", "Div", ["bn/sub", "bn/Sqrt"])], "bn/out", False, False,
    ),
}  # fmt: skip


def _arith_graph(form: str, mean: str | None = None) -> Any:
    """The hand-written BN `form` on x; `mean` replaces the constant mean (moments)."""
    graph = protos.GraphDef()
    nodes = graph.node
    _node(nodes, "x", "Placeholder").attr["dtype"].type = F32
    _params(nodes, "bn")
    _const(nodes, "bn/add/y", 0.001)
    _node(nodes, "bn/add", "AddV2", "bn/var_m" if mean else "bn/var/read", "bn/add/y")
    _node(nodes, "bn/Sqrt", "Sqrt", "bn/add")
    _node(nodes, "bn/Rsqrt", "Rsqrt", "bn/add")
    _node(nodes, "bn/sub", "Sub", "x", "bn/mean_m" if mean else "bn/mean/read")
    if mean:
        _const(nodes, "bn/axes", [int(a) for a in mean.split(",")], I32)
        _node(nodes, "bn/mean_m", "Mean", "x", "bn/axes")
        _node(nodes, "bn/sq", "SquaredDifference", "x", "bn/mean_m")
        _node(nodes, "bn/var_m", "Mean", "bn/sq", "bn/axes")
    for name, op, inputs in _FORMS[form][0]:
        _node(nodes, f"bn/{name}", op, *inputs)
    return graph


@pytest.mark.parametrize("form", list(_FORMS))
def test_bn_written_as_arithmetic_is_decomposed_bn(form: str) -> None:
    _, output, has_gamma, has_beta = _FORMS[form]
    (layer,) = _layers(_arith_graph(form))
    assert (layer.name, layer.scope, layer.op, layer.mode) == (
        output,
        "bn",
        "decomposed",
        "inference",
    )
    assert layer.epsilon == pytest.approx(0.001)
    assert layer.channels == 4
    sources = {role: (p.kind, p.source) for role, p in layer.params.items()}
    assert sources == {
        "gamma": ("const", "bn/gamma") if has_gamma else ("absent", "absent"),
        "beta": ("const", "bn/beta") if has_beta else ("absent", "absent"),
        "moving_mean": ("const", "bn/mean"),
        "moving_variance": ("const", "bn/var"),
    }
    assert layer.input == "x:0"


def test_arithmetic_on_batch_moments_is_training_bn() -> None:
    (layer,) = _layers(_arith_graph("div", mean="0,1,2"))
    assert layer.mode == "training"
    assert layer.params["moving_mean"].kind == "batch"


@pytest.mark.parametrize("axes", ["3", "1,2,3", "-1"])
@pytest.mark.parametrize("form", ["div", "rsqrt"])
def test_moments_of_each_sample_are_not_bn(form: str, axes: str) -> None:
    """Layer, group and instance normalization by hand: the mean leaves axis 0 alone."""
    assert _layers(_arith_graph(form, mean=axes)) == []


def test_normalization_layer_arithmetic_is_not_bn() -> None:
    """Keras' Normalization: (x - mean) / maximum(sqrt(var), eps), no eps under the root."""
    graph = protos.GraphDef()
    nodes = graph.node
    _node(nodes, "x", "Placeholder").attr["dtype"].type = F32
    _params(nodes, "norm")
    _const(nodes, "norm/eps", 1e-7)
    _node(nodes, "norm/Sqrt", "Sqrt", "norm/var/read")
    _node(nodes, "norm/Maximum", "Maximum", "norm/Sqrt", "norm/eps")
    _node(nodes, "norm/sub", "Sub", "x", "norm/mean/read")
    _node(nodes, "norm/truediv", "RealDiv", "norm/sub", "norm/Maximum")
    assert _layers(graph) == []


def test_a_product_with_data_is_not_gamma() -> None:
    """Only a parameter (constant, variable, argument) multiplies in as gamma or adds as beta."""
    graph = _arith_graph("divide_no_gamma_no_beta")
    _node(graph.node, "y", "Placeholder").attr["dtype"].type = F32
    _node(graph.node, "gated", "Mul", "bn/out", "y")
    (layer,) = _layers(graph)
    assert layer.name == "bn/out"
    assert layer.params["gamma"].kind == "absent"


# BN in While loops.


def _fused_in(nodes: Any, name: str, x: str, params: list[str]) -> None:
    bn = _node(nodes, name, "FusedBatchNormV3", x, *params)
    bn.attr["is_training"].b = False
    bn.attr["epsilon"].f = 0.001


def _function(graph: Any, name: str, args: list[str], rets: list[str]) -> Any:
    function = graph.library.function.add()
    function.signature.name = name
    for arg in args:
        function.signature.input_arg.add(name=arg, type=F32)
    for i, ret in enumerate(rets):
        function.signature.output_arg.add(name=f"out{i}", type=F32)
        function.ret[f"out{i}"] = ret
    return function


def _while_graph(gamma_changes: bool = False) -> Any:
    """`while` over (h, gamma, beta, mean, var); the body applies a fused BN to h and hands
    the parameters on unchanged (or doubles gamma each iteration)."""
    graph = protos.GraphDef()
    nodes = graph.node
    _node(nodes, "x", "Placeholder").attr["dtype"].type = F32
    _params(nodes, "loop")
    roles = ["gamma", "beta", "mean", "var"]
    _node(nodes, "while", "While", "x", *(f"loop/{r}/read" for r in roles), cond="c", body="b")
    args = ["h", *roles]
    _function(graph, "c", args, ["less:z:0"])
    body = _function(graph, "b", args, ["relu:activations:0", "g_next:output:0", *roles[1:]])
    _node(body.node_def, "g_next", "Identity", "g2:z:0" if gamma_changes else "gamma")
    _node(body.node_def, "g2", "Mul", "gamma", "gamma")
    _fused_in(body.node_def, "while/bn2/FusedBatchNormV3", "h", roles)
    _node(body.node_def, "relu", "Relu", "while/bn2/FusedBatchNormV3:y:0")
    _node(nodes, "out", "Identity", "while")
    return graph


def test_bn_in_a_while_body_is_found_in_the_loop() -> None:
    (layer,) = _layers(_while_graph())
    assert (layer.scope, layer.name, layer.mode, layer.in_loop) == (
        "bn2",
        "while",
        "inference",
        True,
    )
    assert layer.input is None  # no top-level tensor: not measured in a run
    sources = {role: (p.kind, p.source) for role, p in layer.params.items()}
    assert sources == {
        "gamma": ("const", "loop/gamma"),
        "beta": ("const", "loop/beta"),
        "moving_mean": ("const", "loop/mean"),
        "moving_variance": ("const", "loop/var"),
    }


def test_a_loop_variable_the_body_changes_is_not_the_constant_it_starts_from() -> None:
    (layer,) = _layers(_while_graph(gamma_changes=True))
    assert layer.params["gamma"].kind == "other"
    assert layer.params["moving_mean"].kind == "const"


def test_bn_in_a_v1_loop_frame_is_in_the_loop() -> None:
    """What lowering a While leaves: constants Enter the frame, the result leaves by Exit."""
    graph = protos.GraphDef()
    nodes = graph.node
    _node(nodes, "x", "Placeholder").attr["dtype"].type = F32
    _params(nodes, "p")
    roles = ["gamma", "beta", "mean", "var"]
    for name in ("x", *(f"p/{r}/read" for r in roles)):
        _node(nodes, f"enter/{name}", "Enter", name).attr["is_constant"].b = name != "x"
    _fused_in(nodes, "while/body/_1/while/bn/FusedBatchNormV3", "enter/x",
              [f"enter/p/{r}/read" for r in roles])  # fmt: skip
    _node(nodes, "exit", "Exit", "while/body/_1/while/bn/FusedBatchNormV3")
    _fused_in(nodes, "after/FusedBatchNormV3", "exit", [f"p/{r}/read" for r in roles])
    inside, after = _layers(graph)
    assert (inside.scope, inside.in_loop, inside.params["gamma"].kind) == ("bn", True, "const")
    assert (after.scope, after.in_loop, after.input) == ("after", False, "exit:0")


# BN in one branch of an If.


def _one_branch_graph(predicate: str, then_bn: bool) -> Any:
    graph = protos.GraphDef()
    nodes = graph.node
    _node(nodes, "x", "Placeholder").attr["dtype"].type = F32
    _node(nodes, "flag", "Placeholder").attr["dtype"].type = BOOL
    _const(nodes, "always", True, BOOL)
    _params(nodes, "bn")
    roles = ["gamma", "beta", "mean", "var"]
    _node(nodes, "bn/cond", "If", predicate, "x", *(f"bn/{r}/read" for r in roles),
          then_branch="t", else_branch="e")  # fmt: skip
    args = ["h", *roles]
    with_bn = _function(graph, "t" if then_bn else "e", args, ["bn/cond/y:y:0"])
    _fused_in(with_bn.node_def, "bn/cond/y", "h", roles)
    _function(graph, "e" if then_bn else "t", args, ["h"])
    return graph


@pytest.mark.parametrize("then_bn", [True, False])
def test_bn_in_one_branch_is_conditional_on_the_if(then_bn: bool) -> None:
    (layer,) = _layers(_one_branch_graph("flag", then_bn))
    assert (layer.scope, layer.name, layer.mode) == ("bn", "bn/cond", "conditional")
    assert layer.flag is not None and (layer.flag.name, layer.flag.default) == ("flag", None)


def test_bn_in_one_branch_of_a_constant_if_keeps_its_mode() -> None:
    (layer,) = _layers(_one_branch_graph("always", then_bn=True))
    assert (layer.mode, layer.flag) == ("inference", None)


def test_a_channels_first_hand_written_bn_reshapes_its_factors() -> None:
    """`(x - R(mean)) * R(rsqrt(var + eps)) * R(gamma) + R(beta)`, R a reshape to
    [1, C, 1, 1]: the per-channel factor reaches the product through its reshape."""
    graph = protos.GraphDef()
    nodes = graph.node
    _node(nodes, "x", "Placeholder").attr["dtype"].type = F32
    _params(nodes, "bn")
    _const(nodes, "bn/shape", [1, 4, 1, 1], I32)
    for role in ("mean", "gamma", "beta"):
        _node(nodes, f"bn/R_{role}", "Reshape", f"bn/{role}/read", "bn/shape")
    _const(nodes, "bn/add/y", 0.001)
    _node(nodes, "bn/add", "AddV2", "bn/var/read", "bn/add/y")
    _node(nodes, "bn/Rsqrt", "Rsqrt", "bn/add")
    _node(nodes, "bn/R_rsqrt", "Reshape", "bn/Rsqrt", "bn/shape")
    _node(nodes, "bn/sub", "Sub", "x", "bn/R_mean")
    _node(nodes, "bn/norm", "Mul", "bn/sub", "bn/R_rsqrt")
    _node(nodes, "bn/mul", "Mul", "bn/norm", "bn/R_gamma")
    _node(nodes, "bn/out", "AddV2", "bn/mul", "bn/R_beta")
    (layer,) = _layers(graph)
    assert (layer.name, layer.op, layer.channels) == ("bn/out", "decomposed", 4)
    assert layer.data_format == "channels_first"
    sources = {role: p.source for role, p in layer.params.items()}
    assert sources == {
        "gamma": "bn/gamma", "beta": "bn/beta", "moving_mean": "bn/mean",
        "moving_variance": "bn/var",
    }  # fmt: skip


def test_epsilon_outside_the_square_root_is_found_and_said() -> None:
    """The slip `(x - mean) / (sqrt(var) + eps)`: BN still, reported as nonstandard."""
    graph = protos.GraphDef()
    nodes = graph.node
    _node(nodes, "x", "Placeholder").attr["dtype"].type = F32
    _params(nodes, "bn")
    _node(nodes, "bn/Sqrt", "Sqrt", "bn/var/read")
    _const(nodes, "bn/add/y", 0.001)
    _node(nodes, "bn/add", "AddV2", "bn/Sqrt", "bn/add/y")
    _node(nodes, "bn/sub", "Sub", "x", "bn/mean/read")
    _node(nodes, "bn/norm", "RealDiv", "bn/sub", "bn/add")
    _node(nodes, "bn/mul", "Mul", "bn/norm", "bn/gamma/read")
    _node(nodes, "bn/out", "AddV2", "bn/mul", "bn/beta/read")
    (layer,) = _layers(graph)
    assert layer.name == "bn/out" and layer.epsilon == pytest.approx(0.001)
    assert layer.deviation is not None and "outside the square root" in layer.deviation
