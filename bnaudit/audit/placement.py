"""Where a BN layer sits in the graph: the top-level tensors a run reads it at, or why none.

A layer inside a function is seen from the top level through its callers: a call's output
carries it only if the function returns it, a While runs it once per iteration (no single
output), and the tensor it normalizes is reachable only when carried unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnaudit.audit.cores import Core
from bnaudit.audit.trace import MAX_NESTING, UNCHANGED, Stack, Tracer
from bnaudit.formats.ops import IF_OPS, WHILE_OPS
from bnaudit.model.graph import Body, TensorRef
from bnaudit.names import scope_of


@dataclass(frozen=True)
class Placement:
    """A layer's name, scope and top-level tensors."""

    name: str
    """Its top-level output: `node`, `node:k` (a call's k-th output), or the outermost
    caller when no tensor carries it (`fetchable` False)."""
    scope: str
    input: str | None
    """The top-level tensor it normalizes (`node:index`), None when none carries it."""
    in_loop: bool
    fetchable: bool


def place(tracer: Tracer, core: Core, caller: str) -> Placement:
    """Where `core` sits; `caller` names the layer when no top-level output carries it."""
    in_loop = _in_loop(tracer, core)
    returned = None if in_loop or not core.stack else _returned(tracer, core)
    name = returned or caller
    # A While node names the loop and a call its function, not the layer: the body's node
    # names say the scope (an If branch's do not: they are the branch function's own).
    called = bool(core.stack) and core.stack[-1].body.nodes[core.stack[-1].node].op not in IF_OPS
    return Placement(
        name=name,
        scope=scope_of(core.output if in_loop or called else name.partition(":")[0]),
        input=None if in_loop else _input_of(tracer, core),
        in_loop=in_loop,
        fetchable=not in_loop and (returned is not None or not core.stack),
    )


def _returned(tracer: Tracer, core: Core) -> str | None:
    """The layer's output at the top level, `node` or `node:k` (a call's k-th output)."""
    found = returned(core.body, TensorRef(core.output, 0), core.stack)
    if found is None:
        return None
    return found.node if found.index == 0 else f"{found.node}:{found.index}"


def _in_loop(tracer: Tracer, core: Core) -> bool:
    """Whether `core` runs inside a While body or a v1 loop frame, at any call depth."""
    if core.node.name in tracer.loop_nodes(core.body):
        return True
    for frame in core.stack:
        caller = frame.body.nodes[frame.node]
        if caller.op in WHILE_OPS or frame.node in tracer.loop_nodes(frame.body):
            return True
    return False


def _input_of(tracer: Tracer, core: Core) -> str | None:
    if core.x is None:
        return None
    found = top_level(core.body, core.x, core.stack)
    return None if found is None else f"{found.node}:{found.index}"


def top_level(body: Body, ref: TensorRef, stack: Stack = ()) -> TensorRef | None:
    """The top-level tensor `ref` carries unchanged (out of function arguments, through
    Identity and the live side of a Switch); None when an op changes it on the way."""
    for _ in range(MAX_NESTING + len(body.nodes)):
        if ref.node not in body.nodes:
            if ref.node not in body.args or not stack:
                return None
            frame = stack[-1]
            position = body.args.index(ref.node) + frame.arg_offset
            body, stack = frame.body, stack[:-1]
            ref = body.inputs(body.nodes[frame.node])[position]
            continue
        node = body.nodes[ref.node]
        if node.op not in UNCHANGED or not node.input:
            return ref if body.name is None and not stack else None
        ref = body.inputs(node)[0]
    return None


def returned(body: Body, ref: TensorRef, stack: Stack) -> TensorRef | None:
    """The top-level output that carries `ref` out of the functions in `stack`: the
    result each returns it as (directly or through Identity), as its caller's output;
    None when a function does not return it."""
    while stack:
        index = next((i for i, ret in enumerate(body.rets) if _carries(body, ret, ref)), None)
        if index is None:
            return None
        frame = stack[-1]
        body, stack, ref = frame.body, stack[:-1], TensorRef(frame.node, index)
    return ref


def _carries(body: Body, ret: TensorRef, ref: TensorRef) -> bool:
    """Whether the result `ret` is `ref`, seen through Identity ops."""
    for _ in range(len(body.nodes) + 1):
        if ret == ref:
            return True
        node = body.nodes.get(ret.node)
        if node is None or node.op not in ("Identity", "IdentityN") or not node.input:
            return False
        ret = body.inputs(node)[ret.index if node.op == "IdentityN" else 0]
    return False
