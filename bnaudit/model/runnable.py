"""Find what TensorFlow refuses to run in a graph that is otherwise well formed.

A frozen graph can import cleanly here and still fail the moment TensorFlow builds it: a
function body names an output its node does not have (`ReadVariableOp:value:0` after the
freezer turned the `ReadVariableOp` into an `Identity`, whose output is `output`), a node
reads an output index its op lacks, or an `If`, call or `While` passes a function more,
fewer or other arguments than the function takes. `unrunnable` names each such problem
without TensorFlow, and only what TensorFlow is known to refuse (each rule was checked
against TensorFlow 2.21). An op outside `_OUTPUTS`, an attribute the node does not set and
a function the library lacks (`missing-function`'s case) leave a node unjudged, never
condemned.

Only what TensorFlow builds is judged: every top-level node (a frozen graph keeps only what
its outputs need), every node of the functions the top level's `If`/call/`While` nodes name,
then the functions named by the nodes those bodies need for their results (TensorFlow
prunes a body's other nodes before it builds their functions). Each body is read once: the
work is linear in the graph's size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import Any

from bnaudit.formats.ops import CALL_OPS, IF_OPS
from bnaudit.formats.protos import DATA_TYPES
from bnaudit.model.graph import Graph

# Output arguments of the ops frozen graphs use: (name, attribute counting its tensors, or
# None for one tensor), as TensorFlow's op registry declares them.
_Outputs = tuple[tuple[str, str | None], ...]
_OUTPUTS: dict[str, _Outputs] = {
    **dict.fromkeys(
        ("Const", "Placeholder", "PlaceholderWithDefault", "Identity", "Snapshot", "StopGradient",
         "PreventGradient", "CheckNumerics", "EnsureShape", "Squeeze", "Reshape", "ExpandDims",
         "Shape", "Fill", "BiasAdd", "BatchMatMulV2", "Conv2D", "Conv3D",
         "DepthwiseConv2dNative", "MaxPool", "AvgPool", "Pad", "ConcatV2", "Pack",
         "StridedSlice", "Slice", "Mean", "Sum", "Max", "Min", "Prod", "ArgMax", "Select",
         "SelectV2", "GatherV2", "Tile", "Range", "Enter", "Exit", "NextIteration",
         "LoopCond"),
        (("output", None),),
    ),
    **dict.fromkeys(
        ("Cast", "Transpose", "ZerosLike", "OnesLike", "Neg", "Square", "Sqrt", "Rsqrt",
         "Reciprocal", "Exp", "Log", "Sigmoid", "Tanh"),
        (("y", None),),
    ),
    **dict.fromkeys(
        ("Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Pow",
         "SquaredDifference", "Less", "Greater", "LessEqual", "GreaterEqual", "Equal",
         "LogicalAnd", "LogicalOr"),
        (("z", None),),
    ),
    **dict.fromkeys(("Relu", "Relu6", "Elu", "Selu", "LeakyRelu"), (("activations", None),)),
    **dict.fromkeys(("NoOp", "AssignVariableOp", "AssignSubVariableOp",
                     "AssignAddVariableOp"), ()),
    **dict.fromkeys(("OptionalNone", "OptionalFromValue"), (("optional", None),)),
    **dict.fromkeys(("If", "StatelessIf", "PartitionedCall", "StatefulPartitionedCall"),
                    (("output", "Tout"),)),
    **dict.fromkeys(("While", "StatelessWhile", "IdentityN"), (("output", "T"),)),
    **dict.fromkeys(("Switch", "RefSwitch"), (("output_false", None), ("output_true", None))),
    **dict.fromkeys(("Merge", "RefMerge"), (("output", None), ("value_index", None))),
    **dict.fromkeys(("Unpack",), (("output", "num"),)),
    **dict.fromkeys(("Split", "SplitV"), (("output", "num_split"),)),
    "ReadVariableOp": (("value", None),),
    "VarHandleOp": (("resource", None),),
    "AddN": (("sum", None),),
    "MatMul": (("product", None),),
    "Softmax": (("softmax", None),),
    "OptionalGetValue": (("components", "output_types"),),
    "FusedBatchNorm": tuple(
        (name, None)
        for name in ("y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2")
    ),
}  # fmt: skip
_OUTPUTS["FusedBatchNormV2"] = _OUTPUTS["FusedBatchNorm"]
_OUTPUTS["FusedBatchNormV3"] = (*_OUTPUTS["FusedBatchNorm"], ("reserve_space_3", None))

# The function attributes of the ops TensorFlow builds functions for, and what each is called.
_ROLES: dict[str, tuple[tuple[str, str], ...]] = {
    **dict.fromkeys(IF_OPS, (("then_branch", "then-branch"), ("else_branch", "else-branch"))),
    **dict.fromkeys(CALL_OPS, (("f", ""),)),
    **dict.fromkeys(("While", "StatelessWhile"), (("cond", "condition"), ("body", "body"))),
}
_TYPE_NAMES = {number: name.removeprefix("DT_").lower() for name, number in DATA_TYPES.items()}


@dataclass(frozen=True)
class _Call:
    """Where a function is built: the calling node and the role it gives the function."""

    caller: str
    """The calling node, described (`If model/bn/cond`, `... in function `f``)."""
    role: str
    """`then-branch`, `else-branch`, `condition` or `body`; empty for a call."""

    def of(self, function: str) -> str:
        """`If x: its else-branch function `f``, the start of a reason about `function`."""
        return f"{self.caller}: its {self.role}{' ' if self.role else ''}function `{function}`"


def unrunnable(graph: Graph) -> list[str]:
    """One reason per thing TensorFlow would refuse to build; empty when it can run the graph."""
    library = {f.signature.name: f for f in graph.graph_def.library.function}
    top = graph.graph_def.node
    reasons = _body_reasons(top, {}, None, True) + _call_reasons(top, None, library, True)
    for name, (call, strict) in _reached(top, library).items():
        function = library[name]
        args = {a.name: a for a in function.signature.input_arg}
        reasons += _body_reasons(function.node_def, args, call.of(name), strict)
        reasons += _ret_reasons(function, args, call.of(name), strict)
        reasons += _call_reasons(_live(function, args), name, library, strict)
    return reasons


def _reached(top: Any, library: dict[str, Any]) -> dict[str, tuple[_Call, bool]]:
    """The functions TensorFlow builds, each with its first call, and whether it is strict.

    An If or While TensorFlow lowers into Switch/Merge (`_lower_using_switch_merge`, on every
    one TensorFlow writes), and a call, build their functions strictly; an If or While run as
    a kernel lets Grappler rewrite its functions first, which forgives a few forms (`node:0`,
    a bare node name, a loop function's unused extra argument). Each function is visited at
    most twice: once reached, and again if a strict path reaches it later.
    """
    found: dict[str, tuple[_Call, bool]] = {}
    live: dict[str, list[Any]] = {}
    queue = deque(_calls(top, None, library, strict=True))
    while queue:
        name, call, strict = queue.popleft()
        known = found.get(name)
        if known is not None and (known[1] or not strict):
            continue
        found[name] = (known[0] if known else call, strict)
        function = library[name]
        if name not in live:
            live[name] = _live(function, {a.name for a in function.signature.input_arg})
        queue.extend(_calls(live[name], name, library, strict))
    return found


def _describe(node: Any, body: str | None) -> str:
    return f"{node.op} {node.name}" + (f" in function `{body}`" if body else "")


def _lowered(node: Any) -> bool:
    flag = "_lower_using_switch_merge"
    return flag in node.attr and node.attr[flag].WhichOneof("value") == "b" and node.attr[flag].b


def _calls(
    nodes: Any, body: str | None, library: dict[str, Any], strict: bool
) -> Iterator[tuple[str, _Call, bool]]:
    """The library functions `nodes` build: name, call, and whether all calls were strict."""
    for node in nodes:
        strict_here = strict and (node.op in CALL_OPS or _lowered(node))
        for attr, role in _ROLES.get(node.op, ()):
            name = node.attr[attr].func.name if attr in node.attr else ""
            if name in library:
                yield name, _Call(_describe(node, body), role), strict_here


def _live(function: Any, args: Container[str]) -> list[Any]:
    """The body's nodes its results need through data inputs.

    TensorFlow lowers the If and While it writes into Switch/Merge, inlining their functions,
    and prunes the other nodes before it builds the functions they call, even nodes a
    control input or a control result names (an If run as a kernel builds them all).
    """
    nodes = {n.name: n for n in function.node_def}
    pending = [text.split(":")[0] for text in function.ret.values()]
    live: set[str] = set()
    while pending:
        name = pending.pop()
        if name in nodes and name not in live and name not in args:
            live.add(name)
            pending.extend(t.split(":")[0] for t in nodes[name].input if not t.startswith("^"))
    return [n for n in function.node_def if n.name in live]


def _body_reasons(nodes: Any, args: dict[str, Any], where: str | None, strict: bool) -> list[str]:
    """Inputs naming an output TensorFlow cannot find (`where` is None at the top level)."""
    index = {n.name: n for n in nodes}
    reasons = []
    for node in nodes:
        for text in node.input:
            if text.startswith("^"):
                continue
            problem = (
                _top_problem(index, text)
                if where is None
                else _ref_problem(index, args, text, strict)
            )
            if problem:
                at = f"{where}, node {node.name}" if where else f"{node.op} {node.name}"
                reasons.append(f"{at} reads `{text}`, {problem}")
    return reasons


def _ret_reasons(function: Any, args: dict[str, Any], where: str, strict: bool) -> list[str]:
    """Results the function does not return, or returns from outputs it lacks."""
    index = {n.name: n for n in function.node_def}
    reasons = []
    for arg in function.signature.output_arg:
        text = function.ret.get(arg.name, "")
        if not text:
            reasons.append(f"{where} does not say what its result `{arg.name}` is")
            continue
        problem = _ref_problem(index, args, text, strict)
        if problem:
            reasons.append(f"{where} returns `{text}`, {problem}")
    return reasons


def _top_problem(index: dict[str, Any], text: str) -> str | None:
    """`node` or `node:N` at the top level: the node exists and has output N."""
    name, _, position = text.partition(":")
    node = index.get(name)
    if node is None:
        return "which the graph does not define"
    count = _output_count(node)
    wanted = int(position or 0)
    if count is not None and wanted >= count:
        return f"but {node.op} {name} has {count} output(s)"
    return None


def _ref_problem(
    index: dict[str, Any], args: dict[str, Any], text: str, strict: bool
) -> str | None:
    """A body's reference is an argument (`arg`, `arg:0`) or `node:output_arg:index`.

    `node:0` and a bare `node` are refused only where the function is built strictly.
    """
    parts = text.split(":")
    name = parts[0]
    if name in args:
        return None if name in index else _arg_problem(args[name], parts)
    node = index.get(name)
    if node is None:
        return "which its body does not define"
    if len(parts) < 3 and not strict:
        return None
    if len(parts) == 2:
        return "which names an output by position, where a body says `node:output_arg:index`"
    outputs = _OUTPUTS.get(node.op)
    if len(parts) == 1:
        if outputs:
            return "which names a node, not one of its outputs (`node:output_arg:index`)"
        return None
    if outputs is None:
        return None
    names = dict(outputs)
    if parts[1] not in names:
        return f"but {name} is {_article(node.op)} {node.op}, {_outputs_phrase(list(names))}"
    count = _attr_count(node, names[parts[1]])
    if count is not None and int(parts[2]) >= count:
        return f"but output `{parts[1]}` of {node.op} {name} holds {count} tensor(s)"
    return None


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _outputs_phrase(names: list[str]) -> str:
    """`whose only output is `output``, `whose outputs are ...` or `which has no outputs`."""
    listed = ", ".join(f"`{n}`" for n in names)
    if not names:
        return "which has no outputs"
    return f"whose only output is {listed}" if len(names) == 1 else f"whose outputs are {listed}"


def _arg_problem(arg: Any, parts: list[str]) -> str | None:
    """An argument of one type is `arg` or `arg:0`; anything else is not found."""
    if arg.number_attr or arg.type_list_attr:
        return None
    if len(parts) == 1 or (len(parts) == 2 and parts[1] == "0"):
        return None
    return f"but `{parts[0]}` is an argument of the function (one tensor: `{parts[0]}`)"


def _output_count(node: Any) -> int | None:
    """How many outputs the node has, when its op and the attributes counting them are known."""
    outputs = _OUTPUTS.get(node.op)
    if outputs is None:
        return None
    total = 0
    for _, attr in outputs:
        count = _attr_count(node, attr)
        if count is None:
            return None
        total += count
    return total


def _attr_count(node: Any, attr: str | None) -> int | None:
    """Tensors in one output argument: 1, or its attribute's number or list length."""
    if attr is None:
        return 1
    if attr not in node.attr:
        return None
    value = node.attr[attr]
    kind = value.WhichOneof("value")
    if kind == "i":
        return int(value.i)
    if kind == "list":
        return len(value.list.type)
    return None


def _call_reasons(nodes: Any, body: str | None, library: dict[str, Any], strict: bool) -> list[str]:
    """Calls whose inputs disagree with their type list, or with the functions they build.

    The functions are compared only where TensorFlow builds them strictly (see `_reached`).
    """
    reasons = []
    for node in nodes:
        roles = _ROLES.get(node.op)
        types_attr = "T" if node.op in ("While", "StatelessWhile") else "Tin"
        if roles is None or _attr_count(node, types_attr) is None:
            continue
        types = [int(t) for t in node.attr[types_attr].list.type]
        offset = 1 if node.op in IF_OPS else 0
        data = [t for t in node.input if not t.startswith("^")]
        caller = _describe(node, body)
        if len(data) != offset + len(types):
            predicate = " after its predicate" if offset else ""
            reasons.append(
                f"{caller} has {len(data) - offset} data input(s){predicate} where its "
                f"{types_attr} lists {len(types)}"
            )
        if not strict or (node.op in ("While", "StatelessWhile") and not _lowered(node)):
            continue  # a loop run as a kernel forgives a function's unused extra argument
        for attr, role in roles:
            function = library.get(node.attr[attr].func.name) if attr in node.attr else None
            if function is not None:
                problem = _signature_problem(function, types)
                if problem:
                    reasons.append(f"{_Call(caller, role).of(function.signature.name)} {problem}")
    return reasons


def _signature_problem(function: Any, types: list[int]) -> str | None:
    """The function takes exactly these types, one argument each (where it names them)."""
    args = list(function.signature.input_arg)
    if any(arg.number_attr or arg.type_list_attr for arg in args):
        return None  # an argument of several tensors: not counted here
    if len(args) != len(types):
        return f"takes {len(args)} argument(s) where the caller passes {len(types)}"
    for arg, passed in zip(args, types, strict=True):
        if arg.type and arg.type != passed:
            return (
                f"takes `{arg.name}` as {_type_name(arg.type)} where the caller passes "
                f"{_type_name(passed)}"
            )
    return None


def _type_name(number: int) -> str:
    return _TYPE_NAMES.get(number, f"type {number}")
