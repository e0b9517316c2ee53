"""`Tracer` on small GraphDefs built by hand: where each tensor's value comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fakes import BOOL, F32
from fakes import const as _const
from fakes import node as _node

from bnaudit.audit.trace import (
    Batch,
    Choice,
    Const,
    Flag,
    Frame,
    MissingFunction,
    Opaque,
    Source,
    Tracer,
    resolve,
)
from bnaudit.formats import protos
from bnaudit.model.graph import Graph, TensorRef, index_graph


def _function(graph: Any, name: str, args: list[str], rets: list[str]) -> Any:
    """A library function taking `args` and returning the tensors `rets` (in order)."""
    function = graph.library.function.add()
    function.signature.name = name
    for arg in args:
        function.signature.input_arg.add(name=arg, type=F32)
    for i, ret in enumerate(rets):
        function.signature.output_arg.add(name=f"out{i}", type=F32)
        function.ret[f"out{i}"] = ret
    return function


def _index(graph: Any) -> tuple[Graph, Tracer]:
    indexed = index_graph(Path("hand.pb"), graph)
    return indexed, Tracer(indexed)


def _source(graph: Any, name: str, index: int = 0) -> Source:
    indexed, tracer = _index(graph)
    return tracer.source(indexed.top, TensorRef(name, index))


def _assert_const(source: Source, node: str, value: list[float], read: bool) -> None:
    assert isinstance(source, Const), source
    assert (source.node, source.read) == (node, read)
    assert source.value is not None
    np.testing.assert_array_equal(source.value, np.asarray(value, dtype=np.float32))


# Sources through pass-through ops.


def test_const_used_directly_is_not_a_read() -> None:
    graph = protos.GraphDef()
    _const(graph.node, "bn/ones", [1.0, 1.0])
    _assert_const(_source(graph, "bn/ones"), "bn/ones", [1, 1], read=False)


def test_identity_read_of_a_frozen_variable() -> None:
    graph = protos.GraphDef()
    _const(graph.node, "bn/gamma", [1.5, 2.5])
    _node(graph.node, "bn/gamma/read", "Identity", "bn/gamma")
    _assert_const(_source(graph, "bn/gamma/read"), "bn/gamma", [1.5, 2.5], read=True)


def test_read_variable_op_and_cast_of_a_frozen_resource() -> None:
    graph = protos.GraphDef()
    _const(graph.node, "bn/Cast/ReadVariableOp/resource", [0.25])
    _node(graph.node, "bn/Cast/ReadVariableOp", "ReadVariableOp", "bn/Cast/ReadVariableOp/resource")
    _node(graph.node, "bn/Cast", "Cast", "bn/Cast/ReadVariableOp")
    source = _source(graph, "bn/Cast")
    _assert_const(source, "bn/Cast/ReadVariableOp/resource", [0.25], read=True)


def test_cast_alone_counts_as_a_read() -> None:
    graph = protos.GraphDef()
    _const(graph.node, "c", [3.0])
    _node(graph.node, "c/Cast", "Cast", "c")
    _assert_const(_source(graph, "c/Cast"), "c", [3], read=True)


def test_live_variable_is_opaque() -> None:
    graph = protos.GraphDef()
    _node(graph.node, "bn/gamma", "VarHandleOp")
    _node(graph.node, "bn/gamma/Read", "ReadVariableOp", "bn/gamma")
    assert _source(graph, "bn/gamma/Read") == Opaque("bn/gamma", "VarHandleOp")


def test_switch_passes_its_data_through_either_output() -> None:
    graph = protos.GraphDef()
    _const(graph.node, "mean", [0.5])
    _node(graph.node, "pred", "Placeholder")
    _node(graph.node, "cond/Switch", "Switch", "mean", "pred")
    _node(graph.node, "cond/Identity", "Identity", "cond/Switch:1")
    _assert_const(_source(graph, "cond/Identity"), "mean", [0.5], read=True)
    _assert_const(_source(graph, "cond/Switch", 0), "mean", [0.5], read=False)


def test_identity_n_follows_the_matching_input() -> None:
    graph = protos.GraphDef()
    _const(graph.node, "a", [1.0])
    _const(graph.node, "b", [2.0])
    _node(graph.node, "both", "IdentityN", "a", "b")
    _assert_const(_source(graph, "both", 1), "b", [2], read=False)
    _assert_const(_source(graph, "both", 0), "a", [1], read=False)


def test_batch_statistics() -> None:
    graph = protos.GraphDef()
    _node(graph.node, "x", "Placeholder")
    _node(graph.node, "moments/mean", "Mean", "x", "axes")
    _node(graph.node, "bn", "FusedBatchNormV3", "x", "g", "b", "m", "v")
    assert _source(graph, "moments/mean") == Batch("moments/mean")
    assert _source(graph, "bn", 1) == Batch("bn")
    assert _source(graph, "bn", 2) == Batch("bn")
    assert _source(graph, "bn", 0) == Opaque("bn", "FusedBatchNormV3")


def test_other_ops_and_missing_nodes_are_opaque() -> None:
    graph = protos.GraphDef()
    _node(graph.node, "x", "Placeholder")
    _node(graph.node, "y", "Relu", "x")
    _node(graph.node, "z", "Identity", "gone")
    assert _source(graph, "y") == Opaque("y", "Relu")
    assert _source(graph, "x") == Opaque("x", "Placeholder")
    assert _source(graph, "z") == Opaque("gone", "missing")


# v1 Switch/Merge.


def _v1_cond(pred_op: str, pred_default: bool | None = None) -> Any:
    """cond(pred, batch mean of x, frozen moving mean), TF1's `Switch`/`Merge`."""
    graph = protos.GraphDef()
    _node(graph.node, "x", "Placeholder")
    _const(graph.node, "bn/moving_mean", [0.5, 0.25])
    if pred_op == "Const":
        _const(graph.node, "is_training", bool(pred_default), BOOL)
    elif pred_op == "PlaceholderWithDefault":
        _const(graph.node, "is_training/input", bool(pred_default), BOOL)
        _node(graph.node, "is_training", pred_op, "is_training/input")
    else:
        _node(graph.node, "is_training", pred_op)
    _node(graph.node, "bn/cond/Switch", "Switch", "x", "is_training")
    _node(graph.node, "bn/cond/Mean", "Mean", "bn/cond/Switch:1", "axes")
    _node(graph.node, "bn/cond/Switch_1", "Switch", "bn/moving_mean", "is_training")
    _node(graph.node, "bn/cond/Merge", "Merge", "bn/cond/Switch_1", "bn/cond/Mean")
    return graph


def test_merge_is_a_choice_on_the_switch_predicate() -> None:
    source = _source(_v1_cond("PlaceholderWithDefault", False), "bn/cond/Merge")
    assert isinstance(source, Choice)
    assert source.flag == Flag("is_training", False, constant=False)
    assert source.if_true == Batch("bn/cond/Mean")
    _assert_const(source.if_false, "bn/moving_mean", [0.5, 0.25], read=False)


def test_merge_on_a_bare_placeholder_has_no_default() -> None:
    source = _source(_v1_cond("Placeholder"), "bn/cond/Merge")
    assert isinstance(source, Choice)
    assert source.flag == Flag("is_training", None, constant=False)


def test_merge_on_a_constant_predicate_is_decided() -> None:
    assert _source(_v1_cond("Const", True), "bn/cond/Merge") == Batch("bn/cond/Mean")
    source = _source(_v1_cond("Const", False), "bn/cond/Merge")
    _assert_const(source, "bn/moving_mean", [0.5, 0.25], read=False)


def test_merge_of_values_not_behind_a_switch_is_opaque() -> None:
    graph = protos.GraphDef()
    _const(graph.node, "a", [1.0])
    _const(graph.node, "b", [2.0])
    _node(graph.node, "m", "Merge", "a", "b")
    assert _source(graph, "m") == Opaque("m", "Merge")


# v2 If and function calls.


def _if_graph(op: str = "If", else_name: str = "else_fn") -> Any:
    """If(pred, moving_var): then returns a constant of its own, else its argument."""
    graph = protos.GraphDef()
    _const(graph.node, "is_training/input", True, BOOL)
    _node(graph.node, "is_training", "PlaceholderWithDefault", "is_training/input")
    _const(graph.node, "bn/moving_variance", [4.0, 9.0])
    _node(graph.node, "bn/read", "Identity", "bn/moving_variance")
    _node(
        graph.node, "bn/cond", op, "is_training", "bn/read",
        then_branch="then_fn", else_branch=else_name,
    )  # fmt: skip
    then_fn = _function(graph, "then_fn", ["var"], ["ones:output:0"])
    _const(then_fn.node_def, "ones", [1.0, 1.0])
    else_fn = _function(graph, "else_fn", ["var"], ["id:output:0"])
    _node(else_fn.node_def, "id", "Identity", "var")
    return graph


def test_if_output_is_a_choice_between_its_branches() -> None:
    for op in ("If", "StatelessIf"):
        source = _source(_if_graph(op), "bn/cond")
        assert isinstance(source, Choice), op
        assert source.flag == Flag("is_training", True, constant=False)
        _assert_const(source.if_true, "ones", [1, 1], read=False)
        # The else branch's argument is the caller's input 1 (after the predicate).
        _assert_const(source.if_false, "bn/moving_variance", [4, 9], read=True)


def test_if_with_a_missing_branch() -> None:
    assert _source(_if_graph(else_name="gone_fn"), "bn/cond") == MissingFunction(
        "bn/cond", "gone_fn"
    )


def _call_graph(op: str = "PartitionedCall", function: str = "f") -> Any:
    """call(a, b) -> (Identity(b), a)."""
    graph = protos.GraphDef()
    _const(graph.node, "a", [1.0])
    _const(graph.node, "b", [2.0])
    _node(graph.node, "call", op, "a", "b", f=function)
    body = _function(graph, "f", ["x", "y"], ["id:output:0", "x"])
    _node(body.node_def, "id", "Identity", "y")
    return graph


def test_partitioned_call_maps_outputs_and_arguments() -> None:
    for op in ("PartitionedCall", "StatefulPartitionedCall"):
        graph = _call_graph(op)
        _assert_const(_source(graph, "call", 0), "b", [2], read=True)
        _assert_const(_source(graph, "call", 1), "a", [1], read=False)


def test_call_into_a_missing_function() -> None:
    assert _source(_call_graph(function="nowhere"), "call") == MissingFunction("call", "nowhere")


def test_function_argument_without_a_caller_is_opaque() -> None:
    graph = _call_graph()
    indexed, tracer = _index(graph)
    body = indexed.functions["f"]
    assert tracer.source(body, TensorRef("id", 0)) == Opaque("y", "missing")


def test_function_argument_resolves_through_the_stack() -> None:
    graph = _call_graph()
    indexed, tracer = _index(graph)
    stack = (Frame(indexed.top, "call", 0),)
    source = tracer.source(indexed.functions["f"], TensorRef("x", 0), stack)
    _assert_const(source, "a", [1], read=False)


# The depth bound.


def _chain(length: int) -> Any:
    graph = protos.GraphDef()
    _const(graph.node, "n0", [7.0])
    for i in range(1, length + 1):
        _node(graph.node, f"n{i}", "Identity", f"n{i - 1}")
    return graph


def test_chains_of_any_length_are_followed() -> None:
    # A parameter 50,000 Identity nodes behind its use is still found (no depth bound).
    _assert_const(_source(_chain(50_000), "n50000"), "n0", [7], read=True)


def test_identity_cycle_ends_the_trace() -> None:
    graph = protos.GraphDef()
    _node(graph.node, "a", "Identity", "b")
    _node(graph.node, "b", "Identity", "a")
    source = _source(graph, "a")
    assert isinstance(source, Opaque)
    assert source.op == "cycle"


# Flags.


def _flag(graph: Any, name: str) -> Flag:
    indexed, tracer = _index(graph)
    return tracer.flag(indexed.top, TensorRef(name, 0))


def test_constant_flag() -> None:
    graph = protos.GraphDef()
    _const(graph.node, "training", True, BOOL)
    _const(graph.node, "inference", False, BOOL)
    _node(graph.node, "inference/read", "Identity", "inference")
    assert _flag(graph, "training") == Flag("training", True, constant=True)
    assert _flag(graph, "inference/read") == Flag("inference", False, constant=True)


def test_placeholder_with_default_gives_its_default() -> None:
    for default in (True, False):
        graph = protos.GraphDef()
        _const(graph.node, "default", default, BOOL)
        _node(graph.node, "default/read", "Identity", "default")
        _node(graph.node, "is_training", "PlaceholderWithDefault", "default/read")
        _node(graph.node, "pred", "Identity", "is_training")
        assert _flag(graph, "pred") == Flag("is_training", default, constant=False)


def test_placeholder_with_a_non_constant_default_has_no_default() -> None:
    graph = protos.GraphDef()
    _node(graph.node, "other", "Placeholder")
    _node(graph.node, "is_training", "PlaceholderWithDefault", "other")
    assert _flag(graph, "is_training") == Flag("is_training", None, constant=False)


def test_bare_placeholder_has_no_default() -> None:
    graph = protos.GraphDef()
    _node(graph.node, "is_training", "Placeholder")
    _node(graph.node, "pred", "Identity", "is_training")
    assert _flag(graph, "pred") == Flag("is_training", None, constant=False)


def test_flag_computed_from_the_batch_is_named_by_its_reference() -> None:
    graph = protos.GraphDef()
    _node(graph.node, "x", "Placeholder")
    _node(graph.node, "big", "Mean", "x", "axes")
    assert _flag(graph, "big") == Flag("big", None, constant=False)


def test_flag_passed_into_a_function_keeps_its_default() -> None:
    """A function's predicate argument traced back to the caller's PlaceholderWithDefault.

    This is where detection asks for the flag of an `If` nested in a called function.
    """
    graph = protos.GraphDef()
    _const(graph.node, "is_training/input", False, BOOL)
    _node(graph.node, "is_training", "PlaceholderWithDefault", "is_training/input")
    _node(graph.node, "call", "PartitionedCall", "is_training", f="f")
    _function(graph, "f", ["training"], ["training"])
    indexed, tracer = _index(graph)
    stack = (Frame(indexed.top, "call", 0),)
    flag = tracer.flag(indexed.functions["f"], TensorRef("training", 0), stack)
    assert flag == Flag("is_training", False, constant=False)


# resolve.


def _choice(default: bool | None, constant: bool = False) -> Choice:
    return Choice(Flag("f", default, constant), Batch("train"), Opaque("infer", "Const"))


def test_resolve_with_the_flags_own_default() -> None:
    assert resolve(_choice(True), None) == Batch("train")
    assert resolve(_choice(False), None) == Opaque("infer", "Const")
    undecided = _choice(None)
    assert resolve(undecided, None) is undecided


def test_resolve_with_a_given_value_overrides_fed_flags_only() -> None:
    assert resolve(_choice(None), True) == Batch("train")
    assert resolve(_choice(True), False) == Opaque("infer", "Const")
    # A constant flag cannot be fed: its own value wins.
    assert resolve(_choice(True, constant=True), False) == Batch("train")


def test_resolve_nested_choices_and_plain_sources() -> None:
    inner = Choice(Flag("g", None, False), Batch("inner_train"), Batch("inner_infer"))
    outer = Choice(Flag("f", None, False), Batch("train"), inner)
    assert resolve(outer, False) == Batch("inner_infer")
    assert resolve(outer, True) == Batch("train")
    assert resolve(Batch("x"), False) == Batch("x")
