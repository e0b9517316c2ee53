"""Find the BN computations of one function body: fused ops and the decomposition.

A core is one computation, before layers are assembled (`detect`):
- a fused op (`FusedBatchNorm`, `V2`, `V3`), its mode in its `is_training` attribute;
- the decomposition `tf.nn.batch_normalization` and Keras 3 write:
  `Rsqrt(var + eps)` [`* gamma`] -> `x * scale` and `mean * scale` -> `beta - ...` -> `add`;
- BN written by hand as arithmetic, `(x - mean) / sqrt(var + eps) [* gamma] [+ beta]` and
  its variants (see `arith`).
A computation whose mean is taken over each sample is a layer, group or instance
normalization, not BN, and is left out. Two fused cores joined by a v1 `Merge` are one
layer's training and inference branches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bnaudit.audit.arith import match_arithmetic, per_sample_mean
from bnaudit.audit.trace import Stack
from bnaudit.formats.ops import FUSED_OPS, MERGE_OPS
from bnaudit.formats.tensors import decode_tensor
from bnaudit.model.graph import Body, TensorRef
from bnaudit.vocab import Role

_FUSED_INPUTS: dict[Role, int] = {"gamma": 1, "beta": 2, "moving_mean": 3, "moving_variance": 4}
_FUSED_DEFAULT_EPSILON = 1e-4  # the op's default when the attr is absent


@dataclass(frozen=True)
class Core:
    """One BN computation before layers are assembled: a fused op or a decomposition."""

    body: Body
    stack: Stack
    node: Any
    op: str
    inputs: dict[Role, TensorRef | None]
    """Parameter role -> tensor (None: absent)."""
    epsilon: float | None
    data_format: str | None
    is_training: bool | None
    """A fused op's attribute; None for the decomposition (its sources tell)."""
    output: str
    x: TensorRef | None = None
    """The tensor normalized."""
    deviation: str | None = None
    """How a hand-written formula departs from BN's, when it does."""


def find_cores(body: Body, stack: Stack) -> list[Core]:
    cores = []
    for node in body.nodes.values():
        if node.op in FUSED_OPS:
            cores.append(_fused_core(body, stack, node))
        elif node.op in ("Rsqrt", "Sqrt"):
            core = _decomposed_core(body, stack, node) if node.op == "Rsqrt" else None
            core = core or _arithmetic_core(body, stack, node)
            if core is not None and not per_sample_mean(body, core.inputs["moving_mean"]):
                cores.append(core)
    return cores


def _fused_core(body: Body, stack: Stack, node: Any) -> Core:
    inputs = body.inputs(node)
    attrs = node.attr
    return Core(
        body=body,
        stack=stack,
        node=node,
        op=node.op,
        inputs={role: inputs[i] for role, i in _FUSED_INPUTS.items()},
        epsilon=float32_value(attrs["epsilon"].f) if "epsilon" in attrs else _FUSED_DEFAULT_EPSILON,
        data_format=attrs["data_format"].s.decode(errors="replace")
        if "data_format" in attrs
        else "NHWC",
        is_training=bool(attrs["is_training"].b) if "is_training" in attrs else True,
        output=node.name,
        x=inputs[0],
    )


def _consumers(body: Body, name: str, ops: tuple[str, ...]) -> list[tuple[Any, int]]:
    """Consumers of `name`'s output 0 with one of `ops`: (node, input position)."""
    return [
        (body.nodes[c], position)
        for c, position, index in body.consumers.get(name, [])
        if index == 0 and body.nodes[c].op in ops
    ]


def _other_input(body: Body, node: Any, position: int) -> TensorRef:
    return body.inputs(node)[1 - position]


def _decomposed_core(body: Body, stack: Stack, rsqrt: Any) -> Core | None:
    """Recognise `tf.nn.batch_normalization`'s decomposition around an Rsqrt, or None.

    `scale` is the Rsqrt itself (no gamma) or `Rsqrt * gamma`; the layer's output adds
    `x * scale` to `beta - mean * scale` (or to `(-mean) * scale` without beta). Training
    graphs hang gradient ops on the same tensors, so the structure is searched for, not
    counted.
    """
    added = body.inputs(rsqrt)[0]
    add = body.nodes.get(added.node)
    if add is None or add.op not in ("Add", "AddV2") or len(add.input) != 2:
        return None
    candidates: list[tuple[str, TensorRef | None]] = [(rsqrt.name, None)]
    for gamma_mul, position in _consumers(body, rsqrt.name, ("Mul",)):
        candidates.append((gamma_mul.name, _other_input(body, gamma_mul, position)))
    for scale_name, gamma in candidates:
        found = _normalization(body, scale_name)
        if found is None:
            continue
        mean_ref, beta, output, x = found
        variance, eps_ref = body.inputs(add)
        return Core(
            body=body,
            stack=stack,
            node=rsqrt,
            op="decomposed",
            inputs={
                "gamma": gamma,
                "beta": beta,
                "moving_mean": mean_ref,
                "moving_variance": variance,
            },
            epsilon=_scalar(body, eps_ref),
            data_format=None,
            is_training=None,
            output=output,
            x=x,
        )
    return None


def _normalization(
    body: Body, scale_name: str
) -> tuple[TensorRef, TensorRef | None, str, TensorRef] | None:
    """(mean, beta, output node, x) when `x * scale + (beta - mean * scale)` hangs on scale."""
    muls = _consumers(body, scale_name, ("Mul",))
    for mean_mul, mean_position in muls:
        other = _other_input(body, mean_mul, mean_position)
        other_node = body.nodes.get(other.node)
        shift: str | None = None
        beta: TensorRef | None = None
        mean_ref = other
        subs = [sub for sub, position in _consumers(body, mean_mul.name, ("Sub",)) if position == 1]
        if subs:
            shift, beta = subs[0].name, body.inputs(subs[0])[0]
        elif other_node is not None and other_node.op == "Neg":
            shift, mean_ref = mean_mul.name, body.inputs(other_node)[0]
        if shift is None:
            continue
        for x_mul, x_position in muls:
            if x_mul is mean_mul:
                continue
            for output, _ in _consumers(body, x_mul.name, ("Add", "AddV2")):
                if shift in {ref.node for ref in body.inputs(output)}:
                    return mean_ref, beta, output.name, _other_input(body, x_mul, x_position)
    return None


def _arithmetic_core(body: Body, stack: Stack, root: Any) -> Core | None:
    """BN written by hand as arithmetic around `root` (see `arith`), or None."""
    found = match_arithmetic(body, root)
    if found is None:
        return None
    return Core(
        body=body,
        stack=stack,
        node=root,
        op="decomposed",
        inputs=found.inputs,
        epsilon=_scalar(body, found.epsilon),
        data_format=None,
        is_training=None,
        output=found.output,
        x=found.x,
        deviation=found.deviation,
    )


def _scalar(body: Body, ref: TensorRef) -> float | None:
    node = body.nodes.get(ref.node)
    if node is None or node.op != "Const":
        return None
    value = decode_tensor(node.attr["value"].tensor, node.name)
    return float32_value(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def float32_value(value: Any) -> float:
    """A float32 as the short decimal the user wrote: 0.001, not 0.0010000000474974513."""
    return float(repr(np.float32(value)).removeprefix("np.float32(").rstrip(")"))


def merged_pairs(body: Body, cores: list[Core]) -> list[tuple[Core, Core, str]]:
    """Pairs of fused ops whose outputs meet in one v1 `Merge`: (core, core, merge name)."""
    by_name = {core.node.name: core for core in cores if core.op in FUSED_OPS}
    pairs = []
    for name, node in body.nodes.items():
        if node.op not in MERGE_OPS:
            continue
        found = [_fused_behind(body, ref, by_name) for ref in body.inputs(node)]
        if len(found) == 2 and found[0] and found[1] and found[0] is not found[1]:
            pairs.append((found[0], found[1], name))
    return pairs


def _fused_behind(body: Body, ref: TensorRef, by_name: dict[str, Core]) -> Core | None:
    """The fused core whose output `ref` is, looking through Identity."""
    for _ in range(8):
        if ref.node in by_name and ref.index == 0:
            return by_name[ref.node]
        node = body.nodes.get(ref.node)
        if node is None or node.op != "Identity":
            return None
        ref = body.inputs(node)[0]
    return None
