"""`unrunnable` on small GraphDefs built by hand, each checked against TensorFlow itself.

Every case is run through TensorFlow too (import, then one `Session.run`): a case with a
reason must be refused, a case without one must run, so no rule claims more than TensorFlow
refuses. Then the fixtures: the one TensorFlow refuses is named, the others are not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import MODELS, expected, fixture_dirs

from bnaudit.formats import protos
from bnaudit.formats.tensors import encode_tensor
from bnaudit.model import load_model
from bnaudit.model.graph import index_graph
from bnaudit.model.runnable import _OUTPUTS, unrunnable
from bnaudit.run.execute import import_tensorflow

F32 = protos.DATA_TYPES["DT_FLOAT"]
I32 = protos.DATA_TYPES["DT_INT32"]
BOOL = protos.DATA_TYPES["DT_BOOL"]


def _node(nodes: Any, name: str, op: str, *inputs: str, dtype: int = F32) -> Any:
    node = nodes.add(name=name, op=op, input=list(inputs))
    if op in ("Identity", "Relu", "Mul", "AddV2", "Less"):
        node.attr["T"].type = dtype
    return node


def _const(nodes: Any, name: str, value: Any, dtype: int = F32) -> Any:
    node = nodes.add(name=name, op="Const")
    node.attr["dtype"].type = dtype
    node.attr["value"].tensor.CopyFrom(encode_tensor(np.asarray(value), dtype))
    return node


def _call(nodes: Any, name: str, op: str, inputs: list[str], **funcs: str) -> Any:
    """An If (first input the predicate), call or While passing float tensors."""
    node = nodes.add(name=name, op=op, input=inputs)
    types = [F32] * (len(inputs) - (1 if op == "If" else 0))
    for attr in ("T",) if op == "While" else ("Tin", "Tout"):
        node.attr[attr].list.type.extend(types if attr != "Tout" else [F32])
    if op == "If":
        node.attr["Tcond"].type = BOOL
    for attr, function in funcs.items():
        node.attr[attr].func.name = function
    return node


def _function(graph: Any, name: str, args: list[str], ret: str, out: int = F32) -> Any:
    """A library function of float arguments `args`, returning the one tensor `ret`."""
    function = graph.library.function.add()
    function.signature.name = name
    for arg in args:
        function.signature.input_arg.add(name=arg, type=F32)
    function.signature.output_arg.add(name="out", type=out)
    function.ret["out"] = ret
    return function


def _graph() -> Any:
    """y = inner(If(p, x): then relu(a), else identity(a)), inner(a) = a * 2."""
    graph = protos.GraphDef()
    graph.node.add(name="x", op="Placeholder").attr["dtype"].type = F32
    graph.node.add(name="p", op="Placeholder").attr["dtype"].type = BOOL
    _call(graph.node, "cond", "If", ["p", "x"], then_branch="then_fn", else_branch="else_fn")
    _node(graph.node, "out", "Identity", "cond")
    _call(graph.node, "call", "PartitionedCall", ["out"], f="inner")
    _node(graph.node, "y", "Identity", "call")
    then_fn = _function(graph, "then_fn", ["a"], "rel:activations:0")
    _node(then_fn.node_def, "rel", "Relu", "a")
    else_fn = _function(graph, "else_fn", ["a"], "id:output:0")
    _node(else_fn.node_def, "id", "Identity", "a")
    inner = _function(graph, "inner", ["a"], "m:z:0")
    _const(inner.node_def, "two", 2.0)
    _node(inner.node_def, "m", "Mul", "a", "two:output:0")
    return graph


def _while_graph() -> Any:
    """y = While(i < 3: i + 1) from 0.0."""
    graph = protos.GraphDef()
    _const(graph.node, "start", 0.0)
    _call(graph.node, "loop", "While", ["start"], cond="cond_fn", body="body_fn")
    _node(graph.node, "y", "Identity", "loop")
    cond = _function(graph, "cond_fn", ["i"], "less:z:0", out=BOOL)
    _const(cond.node_def, "three", 3.0)
    _node(cond.node_def, "less", "Less", "i", "three:output:0")
    body = _function(graph, "body_fn", ["i"], "add:z:0")
    _const(body.node_def, "one", 1.0)
    _node(body.node_def, "add", "AddV2", "i", "one:output:0")
    return graph


def _fn(graph: Any, name: str) -> Any:
    return next(f for f in graph.library.function if f.signature.name == name)


def _top(graph: Any, name: str) -> Any:
    return next(n for n in graph.node if n.name == name)


def _tf_runs(graph: Any) -> bool:
    """Whether TensorFlow imports the graph and computes `y` from it."""
    tf = import_tensorflow()
    graph_def = tf.compat.v1.GraphDef.FromString(graph.SerializeToString())
    with tf.Graph().as_default() as built:
        try:
            tf.compat.v1.import_graph_def(graph_def, name="")
        except (ValueError, tf.errors.OpError):
            return False
        feeds = {"x:0": np.ones(2, np.float32), "p:0": False}
        names = {op.name for op in built.get_operations()}
        with tf.compat.v1.Session(graph=built) as session:
            try:
                session.run("y:0", {k: v for k, v in feeds.items() if k[:-2] in names})
            except tf.errors.OpError:
                return False
    return True


def _reasons(graph: Any) -> list[str]:
    return unrunnable(index_graph(Path("hand.pb"), graph))


def _ret(function: str, text: str) -> Callable[[Any], None]:
    def change(graph: Any) -> None:
        _fn(graph, function).ret["out"] = text

    return change


def _dead_reader(graph: Any) -> None:
    _node(_fn(graph, "else_fn").node_def, "unused", "Identity", "id:y:0")


def _extra_input(types: bool) -> Callable[[Any], None]:
    def change(graph: Any) -> None:
        cond = _top(graph, "cond")
        cond.input.append("x")
        if types:
            cond.attr["Tin"].list.type.append(F32)

    return change


def _arg_type(graph: Any) -> None:
    _fn(graph, "else_fn").signature.input_arg[0].type = I32


def _extra_arg(function: str) -> Callable[[Any], None]:
    def change(graph: Any) -> None:
        _fn(graph, function).signature.input_arg.add(name="extra", type=F32)

    return change


def _read_output_1(graph: Any) -> None:
    _top(graph, "out").input[0] = "cond:1"


def _missing_ret(graph: Any) -> None:
    del _fn(graph, "else_fn").ret["out"]


def _nested(live: bool, control: bool = False) -> Callable[[Any], None]:
    """then_fn calls a copy of `inner` that returns `m:product:0`, using it or not.

    An unused call is pruned, unbuilt, when TensorFlow lowers the If into Switch/Merge, as it
    does for every If TensorFlow writes (`_lower_using_switch_merge`); an If run as a kernel
    builds its whole branch and refuses it, which `unrunnable` leaves unsaid.
    """

    def change(graph: Any) -> None:
        broken = graph.library.function.add()
        broken.CopyFrom(_fn(graph, "inner"))
        broken.signature.name = "broken"
        broken.ret["out"] = "m:product:0"
        then_fn = _fn(graph, "then_fn")
        _call(then_fn.node_def, "nested", "PartitionedCall", ["rel:activations:0"], f="broken")
        if live:
            then_fn.ret["out"] = "nested:output:0"
        if control:  # a control result does not keep a call either
            then_fn.control_ret["done"] = "nested"
            then_fn.signature.control_output.append("done")

    return change


def _unused_function(graph: Any) -> None:
    _function(graph, "unused_fn", ["a"], "gone:output:0")


CASES: list[tuple[str, Callable[[Any], Any], Callable[[Any], None], str | None]] = [
    ("healthy", _graph, lambda g: None, None),
    ("healthy loop", _while_graph, lambda g: None, None),
    ("ret is the argument", _graph, _ret("else_fn", "a"), None),
    ("ret is the argument's tensor 0", _graph, _ret("else_fn", "a:0"), None),
    ("an unused function is not built", _graph, _unused_function, None),
    ("a call the body does not use is not built", _graph, _nested(False), None),
    ("a call only a control result names is not built", _graph, _nested(False, True), None),
    (
        "ret names an output arg the op lacks",
        _graph,
        _ret("else_fn", "id:value:0"),
        "If cond: its else-branch function `else_fn` returns `id:value:0`, but id is an "
        "Identity, whose only output is `output`",
    ),
    (
        "ret names a node the body lacks",
        _graph,
        _ret("then_fn", "gone:output:0"),
        "If cond: its then-branch function `then_fn` returns `gone:output:0`, which its body "
        "does not define",
    ),
    ("ret index beyond the arg", _graph, _ret("else_fn", "id:output:1"), "holds 1 tensor(s)"),
    ("ret by position", _graph, _ret("else_fn", "id:0"), "names an output by position"),
    ("ret names a bare node", _graph, _ret("else_fn", "id"), "names a node, not one"),
    ("ret arg:1", _graph, _ret("else_fn", "a:1"), "is an argument of the function"),
    ("ret arg:output:0", _graph, _ret("else_fn", "a:output:0"), "is an argument"),
    ("ret missing", _graph, _missing_ret, "does not say what its result `out` is"),
    (
        "an unused node reads an output its op lacks",
        _graph,
        _dead_reader,
        "If cond: its else-branch function `else_fn`, node unused reads `id:y:0`, but id is "
        "an Identity, whose only output is `output`",
    ),
    (
        "the called function returns what it lacks",
        _graph,
        _ret("inner", "m:output:0"),
        "PartitionedCall call: its function `inner` returns `m:output:0`, but m is a Mul, "
        "whose only output is `z`",
    ),
    (
        "a call the body uses is built",
        _graph,
        _nested(True),
        "PartitionedCall nested in function `then_fn`: its function `broken` returns `m:product:0`",
    ),
    (
        "top level reads an output index the op lacks",
        _graph,
        _read_output_1,
        "Identity out reads `cond:1`, but If cond has 1 output(s)",
    ),
    (
        "If passes more than its Tin lists",
        _graph,
        _extra_input(types=False),
        "If cond has 2 data input(s) after its predicate where its Tin lists 1",
    ),
    (
        "If passes more than its branches take",
        _graph,
        _extra_input(types=True),
        "If cond: its then-branch function `then_fn` takes 1 argument(s) where the caller passes 2",
    ),
    (
        "a branch takes more than the If passes",
        _graph,
        _extra_arg("else_fn"),
        "If cond: its else-branch function `else_fn` takes 2 argument(s)",
    ),
    ("a call's function takes more", _graph, _extra_arg("inner"), "function `inner` takes 2"),
    (
        "a branch takes another type",
        _graph,
        _arg_type,
        "If cond: its else-branch function `else_fn` takes `a` as int32 where the caller "
        "passes float",
    ),
    (
        "a loop body takes more",
        _while_graph,
        _extra_arg("body_fn"),
        "While loop: its body function `body_fn` takes 2 argument(s) where the caller passes 1",
    ),
    (
        "a loop condition returns what it lacks",
        _while_graph,
        _ret("cond_fn", "less:y:0"),
        "While loop: its condition function `cond_fn` returns `less:y:0`, but less is a Less, "
        "whose only output is `z`",
    ),
]


# Forms TensorFlow refuses only where it lowers the If/While (Grappler forgives them when the
# op runs as a kernel): `unrunnable` reports them only then.
LOWERED_ONLY = {"ret by position", "ret names a bare node", "a loop body takes more"}


def _lower(graph: Any, lowered: bool) -> None:
    for node in graph.node:
        if node.op in ("If", "While"):
            node.attr["_lower_using_switch_merge"].b = lowered


@pytest.mark.parametrize("lowered", [True, False], ids=["lowered", "kernel"])
@pytest.mark.parametrize(("name", "build", "change", "reason"), CASES, ids=[c[0] for c in CASES])
def test_rule_agrees_with_tensorflow(
    name: str,
    build: Callable[[], Any],
    change: Callable[[Any], None],
    reason: str | None,
    lowered: bool,
) -> None:
    graph = build()
    change(graph)
    _lower(graph, lowered)
    reasons = _reasons(graph)
    if reason is None or (name in LOWERED_ONLY and not lowered):
        assert reasons == []
    else:
        # One reason, or one per branch when both branches disagree with the If.
        assert 1 <= len(reasons) <= 2 and any(reason in r for r in reasons), reasons
    runs = _tf_runs(graph)
    assert not (reasons and runs), "a reason for a graph TensorFlow runs"
    if lowered:
        assert runs == (reason is None)


def test_unknown_ops_and_missing_functions_are_not_judged() -> None:
    graph = _graph()
    _fn(graph, "else_fn").node_def[0].op = "SomeCustomOp"
    _fn(graph, "else_fn").ret["out"] = "id:whatever:3"
    _top(graph, "call").attr["f"].func.name = "gone_fn"
    del _top(graph, "cond").attr["Tin"]
    _top(graph, "cond").input.append("x")
    assert _reasons(graph) == []


def test_output_table_matches_tensorflow() -> None:
    import_tensorflow()
    from tensorflow.python.framework import op_def_registry

    for op, outputs in _OUTPUTS.items():
        op_def = op_def_registry.get(op)
        declared = tuple(
            (a.name, a.number_attr or a.type_list_attr or None) for a in op_def.output_arg
        )
        assert outputs == declared, op


def test_the_fixture_tensorflow_refuses() -> None:
    graph = load_model(MODELS / "tf2_if_nonfused_2d" / "frozen.pb")
    assert unrunnable(graph) == [
        f"If model/bn/{cond}: its else-branch function `model_bn_{cond}_false_frozen_{n}` "
        "returns `ReadVariableOp:value:0`, but ReadVariableOp is an Identity, whose only "
        "output is `output`"
        for cond, n in (("cond", 360), ("cond_1", 362))
    ]


RUNNABLE = [
    folder
    for folder in fixture_dirs()
    if expected(folder)["list_bn"]["exit_code"] != 3
    and folder.name not in ("tf2_if_nonfused_2d", "tf2_if_missing_function")
]


@pytest.mark.parametrize("folder", RUNNABLE, ids=[f.name for f in RUNNABLE])
def test_fixtures_tensorflow_runs_have_no_reason(folder: Path) -> None:
    assert unrunnable(load_model(folder / expected(folder)["graph"])) == []


def test_a_missing_function_is_left_to_its_own_finding() -> None:
    # TensorFlow refuses this graph too, but `missing-function` already says why.
    graph = load_model(MODELS / "tf2_if_missing_function" / "frozen.pb")
    assert unrunnable(graph) == []
