"""Follow a tensor back to where its value comes from: a constant, batch statistics, a flag.

Frozen graphs wrap parameters in `Identity`, `/read`, `ReadVariableOp`, `Cast`, `Switch`,
`Enter` and function arguments; control flow (v1 `Switch`/`Merge`, v2 `If`) makes a value
depend on a flag. `Tracer.source` sees through all of these and answers with a `Source`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.errors import BnauditError
from bnaudit.formats.ops import (
    CALL_OPS,
    FUSED_OPS,
    IF_OPS,
    LOOP_ENTER_OPS,
    LOOP_EXIT_OPS,
    MERGE_OPS,
    SWITCH_OPS,
    WHILE_OPS,
)
from bnaudit.formats.tensors import FillBudget, decode_tensor
from bnaudit.model.graph import Body, Graph, TensorRef

# Ops that hand their first input through unchanged in value (or only reshaped / cast).
PASS_THROUGH = frozenset(
    {
        "Identity", "RefIdentity", "Cast", "ReadVariableOp", "Enter", "RefEnter", "Snapshot",
        "StopGradient", "PreventGradient", "CheckNumerics", "Squeeze", "Reshape",
        "ExpandDims", "EnsureShape", "Switch", "RefSwitch",
    }
)  # fmt: skip
# Ops whose output is their first input, value and shape (a Switch: on its live side).
UNCHANGED = frozenset({"Identity", "RefIdentity", "Snapshot", "Switch", "RefSwitch"})
# Ops whose correction term a training flag can turn off (batch renormalization).
_CORRECTED = frozenset({"Mul", "Add", "AddV2"})
# Ops through which a frozen variable is read.
READ_OPS = frozenset({"Identity", "RefIdentity", "ReadVariableOp", "Cast", "Snapshot"})
# Ops whose output is a statistic of the batch being normalized.
BATCH_STAT_OPS = frozenset({"Mean", "SquaredDifference", "Square"})
MAX_NESTING = 200
"""How deep conds, `If` branches and calls may nest inside one another along one trace."""


@dataclass(frozen=True)
class Frame:
    """A call into a function body: who called it and where its arguments start."""

    body: Body
    """The body holding the calling node."""
    node: str
    """The calling node (`If`, `PartitionedCall`, ...)."""
    arg_offset: int
    """Position of the function's first argument among the caller's inputs (1 for If)."""


Stack = tuple[Frame, ...]
_Key = tuple[int, str, int, tuple[tuple[int, str], ...]]


def _key(body: Body, ref: TensorRef, stack: Stack) -> _Key:
    """What a trace's result depends on: the body, the tensor and the calls that reach it."""
    return (id(body), ref.node, ref.index, tuple((id(f.body), f.node) for f in stack))


@dataclass(frozen=True)
class Const:
    """A constant baked into the graph."""

    node: str
    value: NDArray[Any] | None
    read: bool = True
    """False when no Identity/ReadVariableOp/Cast stood between it and its user: a frozen
    variable is always read through one, a constant an op made for itself is not."""


@dataclass(frozen=True)
class Batch:
    """A statistic computed from the batch itself (training-mode normalization)."""

    node: str


@dataclass(frozen=True)
class Flag:
    """A boolean that selects training or inference."""

    name: str
    """The node that holds the flag (a placeholder or constant)."""
    default: bool | None
    """Its value when nothing is fed: a constant's value, a PlaceholderWithDefault's default."""
    constant: bool
    """True when the flag cannot be fed (a Const): the choice is static."""


@dataclass(frozen=True)
class Choice:
    """A value chosen by a flag."""

    flag: Flag
    if_true: Source
    if_false: Source


@dataclass(frozen=True)
class Opaque:
    """Anything not followed further: a placeholder, a live variable, an arbitrary op."""

    node: str
    op: str


@dataclass(frozen=True)
class MissingFunction:
    """A call to a function the library does not contain."""

    node: str
    function: str


Source = Const | Batch | Choice | Opaque | MissingFunction


def resolve(source: Source, flag_value: bool | None) -> Source:
    """The source when every flag takes `flag_value` (None: each flag's own default)."""
    while isinstance(source, Choice):
        value = source.flag.default if flag_value is None or source.flag.constant else flag_value
        if value is None:
            return source
        source = source.if_true if value else source.if_false
    return source


def function_name(node: Any, attr: str) -> str:
    """The function named by a node's func attribute (`then_branch`, `f`, ...)."""
    return str(node.attr[attr].func.name) if attr in node.attr else ""


class Tracer:
    """Answers "where does this tensor's value come from?" for one graph.

    Each (body, tensor, calls) is traced once and remembered, so nested conds, `If` branches
    and call trees cost time linear in the graph; chains of pass-through ops of any length are
    followed without recursion, and a cycle ends the trace as `Opaque(..., "cycle")`.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._traced: dict[_Key, Source] = {}
        self.fills = FillBudget()
        """What every constant traced in this graph may expand to, together."""
        self._active: set[_Key] = set()
        self._loops: dict[int, frozenset[str]] = {}

    def source(self, body: Body, ref: TensorRef, stack: Stack = ()) -> Source:
        """The origin of `ref`, a tensor of `body` reached through the calls in `stack`."""
        key = _key(body, ref, stack)
        found = self._traced.get(key)
        if found is not None:
            return found
        if key in self._active:
            return Opaque(ref.node, "cycle")
        if len(self._active) >= MAX_NESTING:
            raise BnauditError(
                f"{self.graph.path}: conds, If branches or calls nest more than {MAX_NESTING} "
                f"deep around {ref.node!r}; no real model does: the graph is damaged or generated"
            )
        self._active.add(key)
        try:
            found = self._follow(body, ref, stack)
        finally:
            self._active.discard(key)
        self._traced[key] = found
        return found

    def _follow(self, body: Body, ref: TensorRef, stack: Stack) -> Source:
        """Walk back through pass-through ops; recurse (memoized) only where values join."""
        read = False
        seen: set[_Key] = set()
        while True:
            key = _key(body, ref, stack)
            if key in seen:
                return Opaque(ref.node, "cycle")
            seen.add(key)
            if ref.node not in body.nodes:
                if ref.node in body.args and stack:
                    frame = stack[-1]
                    caller = frame.body.nodes[frame.node]
                    position = body.args.index(ref.node) + frame.arg_offset
                    if caller.op in WHILE_OPS and not self.loop_invariant(caller, position):
                        return Opaque(caller.name, caller.op)  # a new value each iteration
                    body, stack = frame.body, stack[:-1]
                    ref = body.inputs(caller)[position]
                    continue
                return Opaque(ref.node, "missing")
            node = body.nodes[ref.node]
            op = node.op
            if op in PASS_THROUGH:
                read = read or op in READ_OPS
                ref = body.inputs(node)[0]
            elif op == "IdentityN":
                ref = body.inputs(node)[ref.index]
            elif op == "Const":
                return Const(
                    node.name, decode_tensor(node.attr["value"].tensor, node.name, self.fills), read
                )
            elif op in BATCH_STAT_OPS or (op in FUSED_OPS and ref.index in (1, 2)):
                return Batch(node.name)
            elif op in MERGE_OPS:
                return self._merge(body, node, stack)
            elif op in IF_OPS:
                return self._if_output(body, node, ref.index, stack)
            elif op in CALL_OPS:
                callee = self.graph.functions.get(function_name(node, "f"))
                if callee is None:
                    return MissingFunction(node.name, function_name(node, "f"))
                stack = (*stack, Frame(body, node.name, 0))
                body, ref = callee, callee.rets[ref.index]
            elif op in _CORRECTED and len(body.inputs(node)) == 2:
                return self._corrected(body, node, stack)
            else:
                return Opaque(node.name, op)

    def loop_invariant(self, loop: Any, position: int) -> bool:
        """Whether a While hands its loop variable `position` to every iteration unchanged:
        its body returns that argument as it came (through Identity)."""
        body = self.graph.functions.get(function_name(loop, "body"))
        if body is None or position >= len(body.rets) or position >= len(body.args):
            return False
        ref = body.rets[position]
        for _ in range(len(body.nodes) + 1):
            node = body.nodes.get(ref.node)
            if node is None or node.op not in UNCHANGED or not node.input:
                break
            ref = body.inputs(node)[0]
        return ref.node == body.args[position]

    def loop_nodes(self, body: Body) -> frozenset[str]:
        """The nodes of `body` inside a v1 loop frame (after an `Enter`, before its `Exit`):
        they run once per iteration, so no fetch of theirs has a single value."""
        found = self._loops.get(id(body))
        if found is None:
            inside = {name for name, node in body.nodes.items() if node.op in LOOP_ENTER_OPS}
            pending = list(inside)
            while pending:
                for user, _, _ in body.consumers.get(pending.pop(), []):
                    if user not in inside and body.nodes[user].op not in LOOP_EXIT_OPS:
                        inside.add(user)
                        pending.append(user)
            found = self._loops[id(body)] = frozenset(inside)
        return found

    def flag(self, body: Body, ref: TensorRef, stack: Stack = ()) -> Flag:
        """Describe the boolean that `ref` carries (a predicate of Switch or If)."""
        origin = self.source(body, ref, stack)
        if isinstance(origin, Const):
            value = None if origin.value is None else bool(np.all(origin.value))
            return Flag(origin.node, value, constant=True)
        if isinstance(origin, Opaque):
            found = self._find(origin.node, body, stack)
            node = None if found is None else found[0]
            if found is not None and node is not None and node.op == "PlaceholderWithDefault":
                # The default is traced where the placeholder lives, maybe a caller's body.
                _, home, home_stack = found
                default = self.source(home, home.inputs(node)[0], home_stack)
                value = (
                    bool(np.all(default.value))
                    if isinstance(default, Const) and default.value is not None
                    else None
                )
                return Flag(node.name, value, constant=False)
            return Flag(origin.node, None, constant=False)
        return Flag(ref.node, None, constant=False)

    def _find(self, name: str, body: Body, stack: Stack) -> tuple[Any, Body, Stack] | None:
        """The node called `name` in `body` or, innermost first, a caller's body; with that
        body and the calls that reach it."""
        if name in body.nodes:
            return body.nodes[name], body, stack
        for depth in range(len(stack) - 1, -1, -1):
            caller = stack[depth].body
            if name in caller.nodes:
                return caller.nodes[name], caller, stack[:depth]
        return None

    def switch_branch(self, body: Body, ref: TensorRef) -> tuple[TensorRef, bool] | None:
        """The (predicate, branch) of the v1 `Switch` that `ref`'s data flows out of."""
        seen: set[TensorRef] = set()
        while ref not in seen:
            seen.add(ref)
            node = body.nodes.get(ref.node)
            if node is None or not node.input:
                return None
            if node.op in SWITCH_OPS:
                return body.inputs(node)[1], ref.index == 1
            inputs = body.inputs(node)
            if not inputs:
                # A constant of one branch (`ones_like` folded) hangs on the branch's pivot
                # (`switch_t`/`switch_f`, an Identity of the Switch) by a control edge.
                pivots = [body.parse_ref(i[1:]) for i in node.input if i.startswith("^")]
                if len(pivots) != 1:
                    return None
                inputs = pivots
            ref = inputs[0]
        return None

    def _corrected(self, body: Body, node: Any, stack: Stack, nested: bool = False) -> Source:
        """`x * r` or `x + d` whose correction a flag turns off in inference.

        Batch renormalization (`renorm=True`) scales gamma by `r` and adds `d * gamma` to
        beta; in inference a cond makes `r` ones and `d` zeros. So in inference the product
        or sum is `x` itself (and `d * gamma` is zeros): a Choice whose inference side is `x`.
        Only an operand a flag chooses right there is looked at, so arithmetic elsewhere is
        never traced (a tree of calls adding their results would take exponential time).
        """
        refs = body.inputs(node)
        for this_ref, other_ref in ((refs[0], refs[1]), (refs[1], refs[0])):
            this = self._chosen(body, this_ref, stack, nested)
            if this is None:
                continue
            off = resolve(this, False)
            if _filled(off, 1.0 if node.op == "Mul" else 0.0):
                return Choice(
                    this.flag, Opaque(node.name, node.op), self.source(body, other_ref, stack)
                )
            if node.op == "Mul" and _filled(off, 0.0):
                return Choice(this.flag, Opaque(node.name, node.op), off)
        return Opaque(node.name, node.op)

    def _chosen(self, body: Body, ref: TensorRef, stack: Stack, nested: bool) -> Choice | None:
        """The flag's choice `ref` carries when a cond's Merge or an If gives it (through
        pass-through ops of this body, or one correction product `d * gamma`), else None."""
        for _ in range(len(body.nodes) + 1):
            node = body.nodes.get(ref.node)
            if node is None:
                return None
            if node.op in PASS_THROUGH and node.op not in SWITCH_OPS and node.input:
                ref = body.inputs(node)[0]
                continue
            if node.op in MERGE_OPS or node.op in IF_OPS:
                found = self.source(body, ref, stack)
            elif node.op == "Mul" and not nested and len(body.inputs(node)) == 2:
                found = self._corrected(body, node, stack, nested=True)
            else:
                return None
            return found if isinstance(found, Choice) else None
        return None

    def _merge(self, body: Body, node: Any, stack: Stack) -> Source:
        branches: dict[bool, Source] = {}
        flag: Flag | None = None
        for ref in body.inputs(node):
            found = self.switch_branch(body, ref)
            if found is None:
                return Opaque(node.name, node.op)
            pred, branch = found
            flag = flag or self.flag(body, pred, stack)
            branches[branch] = self.source(body, ref, stack)
        if flag is None or set(branches) != {True, False}:
            return Opaque(node.name, node.op)
        return _choose(flag, branches[True], branches[False])

    def _if_output(self, body: Body, node: Any, index: int, stack: Stack) -> Source:
        branches = []
        for attr in ("then_branch", "else_branch"):
            callee = self.graph.functions.get(function_name(node, attr))
            if callee is None:
                return MissingFunction(node.name, function_name(node, attr))
            frame = Frame(body, node.name, 1)
            branches.append(self.source(callee, callee.rets[index], (*stack, frame)))
        flag = self.flag(body, body.inputs(node)[0], stack)
        return _choose(flag, branches[0], branches[1])


def _filled(source: Source, value: float) -> bool:
    """Whether `source` is a constant an op made (not a frozen variable) holding only `value`."""
    return (
        isinstance(source, Const)
        and not source.read
        and source.value is not None
        and source.value.size > 0
        and bool(np.all(source.value == value))
    )


def _choose(flag: Flag, if_true: Source, if_false: Source) -> Source:
    if flag.constant and flag.default is not None:
        return if_true if flag.default else if_false
    return Choice(flag, if_true, if_false)
