"""Recognise BN written by hand as plain arithmetic, and statistics that are not a batch's.

People write BN without `tf.nn.batch_normalization`:
`(x - mean) / tf.sqrt(var + eps) * gamma + beta`, or `(x - mean) * tf.math.rsqrt(var + eps)`,
with gamma and beta in either order of the products, or absent. What makes it BN and not
another normalization is where the statistics come from: constants (moving statistics), or
moments over the batch axis. Layer, group and instance normalization take moments of each
sample (axis 0 not reduced); Keras' `Normalization` preprocessing layer divides by
`maximum(sqrt(var), eps)`, never by `sqrt(var + eps)`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from bnaudit.formats.ops import VARIABLE_OPS
from bnaudit.formats.tensors import decode_tensor
from bnaudit.model.graph import Body, TensorRef
from bnaudit.vocab import Role

_ADDS = ("Add", "AddV2")
_DIVS = ("RealDiv", "Div", "DivNoNan", "TrueDiv")
# Ops a parameter or a statistic is read or reshaped through on its way to its user.
_READS = frozenset(
    {
        "Identity", "ReadVariableOp", "Cast", "Snapshot", "Reshape", "ExpandDims", "Squeeze",
        "StopGradient", "Enter", "Switch", "EnsureShape",
    }
)  # fmt: skip


class Arithmetic(NamedTuple):
    """A hand-written BN: its parameters, epsilon and the tensors it reads and writes."""

    inputs: dict[Role, TensorRef | None]
    epsilon: TensorRef
    output: str
    x: TensorRef
    deviation: str | None = None
    """How the formula departs from BN's, when it does."""


OUTSIDE_SQRT = (
    "epsilon is added outside the square root, (x - mean) / (sqrt(var) + eps), not BN's "
    "(x - mean) / sqrt(var + eps): channels of near-zero variance come out differently"
)


def match_arithmetic(body: Body, root: Any) -> Arithmetic | None:
    """The hand-written BN around a `Sqrt` (divided by) or `Rsqrt` (multiplied by) of
    `var + eps`, or a `Sqrt(var) + eps` divided by; None otherwise."""
    added = body.nodes.get(body.inputs(root)[0].node)
    if added is None or added.op not in _ADDS or len(added.input) != 2:
        return _outside_sqrt(body, root) if root.op == "Sqrt" else None
    found = _var_and_eps(body, added)
    if found is None:
        return None
    variance, eps = found
    return _around(body, root, root.name, variance, eps)


def _outside_sqrt(body: Body, root: Any) -> Arithmetic | None:
    """`(x - mean) / (sqrt(var) + eps)`: a hand-written BN with its epsilon misplaced."""
    for user, _ in _users(body, root.name):
        if user.op in _ADDS and len(user.input) == 2:
            found = _var_and_eps(body, user)
            if found is not None and found[0].node == root.name:
                variance = body.inputs(root)[0]
                matched = _around(body, root, user.name, variance, found[1])
                return None if matched is None else matched._replace(deviation=OUTSIDE_SQRT)
    return None


def _around(
    body: Body, root: Any, denominator: str, variance: TensorRef, eps: TensorRef
) -> Arithmetic | None:
    """The rest of the pattern, around the tensor that divides (`Sqrt`) or multiplies
    (`Rsqrt`) the centred input."""
    scales: list[tuple[str, TensorRef | None]] = [(denominator, None)]
    if root.op == "Rsqrt":
        scales += [
            (mul.name, other) for mul, other in _partners(body, root.name, ("Mul",)) if other
        ]
    for scale, gamma in scales:
        for user, position in _users_reshaped(body, scale):
            if root.op == "Sqrt" and user.op in _DIVS and position == 1:
                numerator = body.inputs(user)[0]
            elif root.op == "Rsqrt" and user.op == "Mul":
                numerator = body.inputs(user)[1 - position]
            else:
                continue
            centred = _centred(body, numerator, gamma)
            if centred is not None:
                x, mean, gamma_used = centred
                return _finish(body, user.name, gamma_used, x, mean, variance, eps)
    return None


def _finish(
    body: Body,
    normalized: str,
    gamma: TensorRef | None,
    x: TensorRef,
    mean: TensorRef,
    variance: TensorRef,
    eps: TensorRef,
) -> Arithmetic:
    """Follow the normalized tensor through `* gamma` (if not yet applied) and `+ beta`."""
    output = normalized
    if gamma is None:
        muls = [(m, o) for m, o in _partners(body, output, ("Mul",)) if o is not None]
        if len(muls) == 1:
            output, gamma = muls[0][0].name, muls[0][1]
    beta: TensorRef | None = None
    adds = [(a, o) for a, o in _partners(body, output, _ADDS) if o is not None]
    if len(adds) == 1:
        output, beta = adds[0][0].name, adds[0][1]
    roles: dict[Role, TensorRef | None] = {
        "gamma": gamma,
        "beta": beta,
        "moving_mean": mean,
        "moving_variance": variance,
    }
    return Arithmetic(roles, eps, output, x)


def _centred(
    body: Body, ref: TensorRef, gamma: TensorRef | None
) -> tuple[TensorRef, TensorRef, TensorRef | None] | None:
    """(x, mean, gamma) when `ref` is `x - mean`, or `(x - mean) * gamma` if no gamma yet."""
    node = body.nodes.get(ref.node)
    if node is None or ref.index != 0:
        return None
    if node.op == "Sub":
        x, mean = body.inputs(node)
        return x, mean, gamma
    if node.op == "Mul" and gamma is None:
        for position, inner in enumerate(body.inputs(node)):
            other = body.inputs(node)[1 - position]
            sub = body.nodes.get(inner.node)
            if sub is not None and sub.op == "Sub" and _is_parameter(body, other):
                x, mean = body.inputs(sub)
                return x, mean, other
    return None


def _var_and_eps(body: Body, added: Any) -> tuple[TensorRef, TensorRef] | None:
    """(variance, epsilon) of `var + eps`, epsilon a scalar constant on either side."""
    refs = body.inputs(added)
    for position, ref in enumerate(refs):
        node = body.nodes.get(ref.node)
        if node is not None and node.op == "Const":
            value = decode_tensor(node.attr["value"].tensor, node.name)
            if value is not None and value.size == 1:
                return refs[1 - position], ref
    return None


def _users(body: Body, name: str) -> list[tuple[Any, int]]:
    """Consumers of `name`'s output 0: (node, input position)."""
    return [(body.nodes[c], pos) for c, pos, index in body.consumers.get(name, []) if index == 0]


_SHAPES = frozenset({"Reshape", "ExpandDims", "Identity"})


def _users_reshaped(body: Body, name: str) -> list[tuple[Any, int]]:
    """Consumers of `name`, seen through reshapes: a channels-first BN written by hand
    reshapes its per-channel factor to `[1, C, 1, 1]` before multiplying."""
    found: list[tuple[Any, int]] = []
    frontier = [name]
    for _ in range(4):
        following = []
        for current in frontier:
            for user, position in _users(body, current):
                if user.op in _SHAPES and position == 0:
                    following.append(user.name)
                else:
                    found.append((user, position))
        frontier = following
    return found


def _partners(body: Body, name: str, ops: tuple[str, ...]) -> list[tuple[Any, TensorRef | None]]:
    """Binary consumers of `name` with one of `ops`, each with its other input when that is
    a parameter (a constant, a variable or a function argument), else None."""
    found = []
    for user, position in _users(body, name):
        if user.op in ops and len(body.inputs(user)) == 2:
            other = body.inputs(user)[1 - position]
            found.append((user, other if _is_parameter(body, other) else None))
    return found


def _is_parameter(body: Body, ref: TensorRef) -> bool:
    """Whether `ref` is read from a constant, a variable or a function argument, not
    computed from the data."""
    for _ in range(16):
        if ref.node in body.args:
            return True
        node = body.nodes.get(ref.node)
        if node is None:
            return False
        if node.op == "Const" or node.op in VARIABLE_OPS:
            return True
        if node.op not in _READS or not node.input:
            return False
        ref = body.inputs(node)[0]
    return False


def per_sample_mean(body: Body, ref: TensorRef | None) -> bool:
    """Whether `ref` is a mean over each sample (axis 0 not reduced): the statistic of a
    layer, group or instance normalization, never of BN."""
    for _ in range(16):
        node = None if ref is None else body.nodes.get(ref.node)
        if node is None:
            return False
        if node.op == "Mean":
            axes_node = body.nodes.get(body.inputs(node)[1].node)
            if axes_node is None or axes_node.op != "Const":
                return False
            axes = decode_tensor(axes_node.attr["value"].tensor, axes_node.name)
            return axes is not None and 0 not in {int(a) for a in axes.reshape(-1)}
        if node.op not in _READS or not node.input:
            return False
        ref = body.inputs(node)[0]
    return False
