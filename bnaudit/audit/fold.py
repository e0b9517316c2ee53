"""BN folded into the preceding convolution or matmul, and its check against a checkpoint.

`optimize_for_inference` replaces `conv -> FusedBatchNorm` by `conv(w') -> BiasAdd(b')`, with
`w' = w * gamma / sqrt(var + eps)` per output channel and
`b' = beta + (bias - mean) * gamma / sqrt(var + eps)`; the BiasAdd keeps the BN's node name.
It folds into `Conv2D` and `DepthwiseConv2dNative`; a depthwise filter `[H, W, in, M]` makes
`in * M` output channels, channel `i * M + m` from `filter[..., i, m]`.
Only the checkpoint can tell whether the fold used the right statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.trace import Const, Tracer
from bnaudit.model.graph import Graph
from bnaudit.names import scope_of

DEPTHWISE_OPS = frozenset({"DepthwiseConv2dNative"})
LINEAR_OPS = frozenset({"Conv2D", "MatMul", "Conv3D"}) | DEPTHWISE_OPS
# Epsilons BN APIs use by default, tried in turn: a fold does not record its epsilon.
COMMON_EPSILONS = (1e-3, 1e-5, 1e-4, 1.001e-5)


@dataclass(frozen=True)
class FoldCandidate:
    """A linear op with constant weights followed by a constant bias: maybe a folded BN."""

    name: str
    """The bias node (BiasAdd/Add), which keeps the folded BN's name."""
    scope: str
    linear: str
    """The Conv2D/DepthwiseConv2dNative/MatMul/Conv3D node."""
    linear_op: str
    """Its op, which says how the weights' axes map to output channels."""
    weights_node: str
    weights: NDArray[Any]
    offset_node: str
    """The Const holding the folded offset (what the BiasAdd adds)."""
    offset: NDArray[Any]
    position: int


@dataclass(frozen=True)
class FoldCheck:
    """How well a candidate matches a fold recomputed from the checkpoint."""

    max_abs_diff: float
    max_rel_diff: float
    epsilon: float


def find_candidates(graph: Graph) -> list[FoldCandidate]:
    """Every linear op with Const weights whose output gets a Const per-channel bias."""
    tracer = Tracer(graph)
    body = graph.top
    found = []
    for name, node in body.nodes.items():
        if node.op not in ("BiasAdd", "Add", "AddV2") or len(node.input) != 2:
            continue
        x_ref, bias_ref = body.inputs(node)
        linear = body.nodes.get(x_ref.node)
        if linear is None or linear.op not in LINEAR_OPS:
            continue
        weights = tracer.source(body, body.inputs(linear)[1])
        offset = tracer.source(body, bias_ref)
        if not (isinstance(weights, Const) and isinstance(offset, Const)):
            continue
        if weights.value is None or offset.value is None or offset.value.ndim != 1:
            continue
        if output_channels(linear.op, weights.value.shape) != offset.value.shape[0]:
            continue
        found.append(
            FoldCandidate(
                name=name,
                scope=scope_of(name),
                linear=linear.name,
                linear_op=linear.op,
                weights_node=weights.node,
                weights=weights.value,
                offset_node=offset.node,
                offset=offset.value,
                position=graph.order.get(name, 0),
            )
        )
    return found


def output_channels(linear_op: str, weights_shape: tuple[int, ...]) -> int | None:
    """How many channels `linear_op` with weights of this shape outputs (None: not 4-D)."""
    if linear_op in DEPTHWISE_OPS:
        return weights_shape[2] * weights_shape[3] if len(weights_shape) == 4 else None
    return weights_shape[-1] if weights_shape else None


def refold(
    kernel: NDArray[Any],
    bias: NDArray[Any] | None,
    stats: dict[str, NDArray[Any] | None],
    epsilon: float,
    linear_op: str,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """The folded weights and offset `kernel`/`bias` and the BN statistics give (float64)."""
    mean, variance = stats["moving_mean"], stats["moving_variance"]
    assert mean is not None and variance is not None
    channels = output_channels(linear_op, kernel.shape)
    assert channels is not None
    gamma = stats.get("gamma")
    beta = stats.get("beta")
    gamma = np.ones(channels) if gamma is None else gamma
    beta = np.zeros(channels) if beta is None else beta
    bias = np.zeros(channels) if bias is None else bias
    scale = gamma.astype(np.float64) / np.sqrt(variance.astype(np.float64) + epsilon)
    offset = beta + (bias - mean) * scale
    if linear_op in DEPTHWISE_OPS:
        # Output channel i * M + m comes from filter[..., i, m]: scale laid out as (in, M).
        return kernel * scale.reshape(kernel.shape[2:]), offset
    return kernel * scale, offset


def check_fold(
    candidate: FoldCandidate,
    kernel: NDArray[Any],
    bias: NDArray[Any] | None,
    stats: dict[str, NDArray[Any] | None],
) -> FoldCheck:
    """Compare the candidate with the fold of `kernel`/`bias` by the checkpoint's BN stats."""
    best: FoldCheck | None = None
    for eps in COMMON_EPSILONS:
        weights, offset = refold(kernel, bias, stats, eps, candidate.linear_op)
        expected = np.concatenate([weights.reshape(-1), offset.reshape(-1)])
        actual = np.concatenate([candidate.weights.reshape(-1), candidate.offset.reshape(-1)])
        diff = np.abs(actual.astype(np.float64) - expected)
        check = FoldCheck(
            max_abs_diff=float(np.max(diff)),
            max_rel_diff=float(np.max(diff / np.maximum(np.abs(expected), 1e-12))),
            epsilon=eps,
        )
        if best is None or check.max_abs_diff < best.max_abs_diff:
            best = check
    assert best is not None
    return best
