"""BN folded into the preceding convolution or matmul, and its check against a checkpoint.

`optimize_for_inference` replaces `conv -> FusedBatchNorm` by `conv(w') -> BiasAdd(b')`, with
`w' = w * gamma / sqrt(var + eps)` per output channel and
`b' = beta + (bias - mean) * gamma / sqrt(var + eps)`; the BiasAdd keeps the BN's node name.
It folds into `Conv2D` and `DepthwiseConv2dNative`; a depthwise filter `[H, W, in, M]` makes
`in * M` output channels, channel `i * M + m` from `filter[..., i, m]`.
Only the checkpoint can tell whether the fold used the right statistics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.foldpair import COMMON_EPSILONS, Fold, FoldPair, pair_folds
from bnaudit.audit.match import Group, GroupValues
from bnaudit.audit.options import Tolerances
from bnaudit.audit.trace import Const, Tracer
from bnaudit.checkpoint.base import VariableInfo
from bnaudit.checkpoint.groups import is_bookkeeping
from bnaudit.checkpoint.layout import Layout, layout
from bnaudit.findings import Finding, at_layer, finding
from bnaudit.model.graph import Graph
from bnaudit.names import scope_of
from bnaudit.report.results import LayerComparison, StatDiff
from bnaudit.vocab import ROLES, STAT_ROLES, Role

DEPTHWISE_OPS = frozenset({"DepthwiseConv2dNative"})
LINEAR_OPS = frozenset({"Conv2D", "MatMul", "Conv3D"}) | DEPTHWISE_OPS


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
    stats: dict[Role, NDArray[Any] | None],
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
    stats: dict[Role, NDArray[Any] | None],
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


@dataclass(frozen=True)
class FoldedLayer:
    """BN folded into a convolution, with the checkpoint's values to fold it again."""

    scope: str
    """The checkpoint's BN scope, as the report row names it."""
    candidate: FoldCandidate
    kernel: NDArray[Any]
    """The checkpoint's unfolded kernel."""
    bias: NDArray[Any] | None
    """The checkpoint's bias of the linear op; None when it has none."""
    stats: dict[Role, NDArray[Any] | None]
    """Role -> the checkpoint's BN value."""
    epsilon: float
    """The epsilon that best explains the frozen fold (a fold does not record it)."""
    matches: bool = False
    """The frozen fold equals the checkpoint's within the fold tolerances (`folded`)."""


def folded_rows(
    graph: Graph,
    groups: list[Group],
    values: GroupValues,
    tolerances: Tolerances,
    bn_keys: set[str],
) -> tuple[list[tuple[int, LayerComparison]], list[Group], list[FoldedLayer]]:
    """Explain checkpoint groups with no graph layer as BN folded into a convolution;
    `bn_keys` are every BN group's keys (no kernel among them)."""
    if not groups:
        return [], [], []
    candidates = {c.name: c for c in find_candidates(graph)}
    ckpt = values.ckpt
    variables = [v for v in ckpt.variables() if v.key not in bn_keys and not is_bookkeeping(v.key)]
    where = layout(ckpt)
    folds = [
        Fold(c.name, c.linear, c.linear_op, c.weights, c.offset.shape[0])
        for c in candidates.values()
    ]
    pairing = pair_folds(folds, groups, values, where, variables)
    rows = []
    refoldable = []
    for pair in pairing.pairs:
        candidate = candidates[pair.fold.name]
        bias = _bias_key(pair.kernel.key, candidate, variables, where) if pair.kernel.key else None
        row, folded = _fold_row(candidate, pair, bias, values, tolerances)
        rows.append((candidate.position, row))
        if folded is not None:
            refoldable.append(folded)
    for group, rivals in pairing.ambiguous:
        candidate = candidates[rivals[0].name]
        names = ", ".join(r.linear for r in rivals[:3]) + (" ..." if len(rivals) > 3 else "")
        message = (
            f"BN may be folded into {names}, but neither names, model order nor values "
            "confirm it: the fold is not verified"
            if len(rivals) == 1
            else f"BN seems folded into a convolution, but {len(rivals)} fit it ({names}) and "
            "neither names, model order nor values tell which: the fold is not verified"
        )
        rows.append(
            (candidate.position, _row(candidate, group, [finding("fold-ambiguous", message)], {}))
        )
    return rows, list(pairing.unexplained), refoldable


def _fold_row(
    candidate: FoldCandidate,
    pair: FoldPair,
    bias_key: str | None,
    values: GroupValues,
    tolerances: Tolerances,
) -> tuple[LayerComparison, FoldedLayer | None]:
    group = pair.group
    stats_values = {role: values.of(group, role) for role in ROLES}
    if pair.kernel.rivals:
        kernels = ", ".join(pair.kernel.rivals[:3]) + (
            " ..." if len(pair.kernel.rivals) > 3 else ""
        )
        message = (
            f"BN was folded into {candidate.linear}, but the checkpoint holds "
            f"{len(pair.kernel.rivals)} kernels of its shape ({kernels}) and neither names nor "
            "values tell which it was made from: the fold is not verified"
        )
        return _row(candidate, group, [finding("fold-ambiguous", message)], {}), None
    if pair.kernel.key is None or any(stats_values[r] is None for r in STAT_ROLES):
        message = (
            "BN was folded into the preceding layer's weights; the checkpoint lacks the "
            "kernel or statistics to verify the fold"
        )
        return _row(candidate, group, [finding("folded", message)], {}), None
    kernel = values.ckpt.read(pair.kernel.key)
    bias = None if bias_key is None else values.ckpt.read(bias_key)
    check = check_fold(candidate, kernel, bias, stats_values)
    folded = FoldedLayer(group.scope, candidate, kernel, bias, stats_values, check.epsilon)
    stats = {"folded": StatDiff(check.max_abs_diff, check.max_rel_diff)}
    limit = tolerances.fold_atol + tolerances.fold_rtol * float(
        np.max(np.abs(np.concatenate([candidate.weights.ravel(), candidate.offset.ravel()])))
    )
    if check.max_abs_diff <= limit:
        folded = dataclasses.replace(folded, matches=True)
        message = (
            f"BN was folded into {candidate.linear} (optimize_for_inference); the folded "
            f"weights match this checkpoint (epsilon {check.epsilon:g})"
        )
        return _row(candidate, group, [finding("folded", message)], stats), folded
    message = (
        f"BN was folded into {candidate.linear}, but not from this checkpoint's kernel and "
        "statistics: the fold used stale statistics or another checkpoint"
    )
    return _row(candidate, group, [finding("folded-mismatch", message)], stats), folded


def _row(
    candidate: FoldCandidate, group: Group, findings: list[Finding], stats: dict[str, StatDiff]
) -> LayerComparison:
    return LayerComparison(
        name=candidate.name,
        scope=group.scope,
        op="folded",
        mode="folded",
        match_method="folded",
        checkpoint_scope=group.scope,
        stats=stats,
        findings=tuple(at_layer(findings, group.scope)),
    )


def _bias_key(
    kernel: str, candidate: FoldCandidate, variables: list[VariableInfo], where: Layout
) -> str | None:
    """The checkpoint's bias beside the kernel (same layer, one value per output channel)."""
    home = where.names.get(kernel, kernel).rpartition("/")[0]
    channels = candidate.offset.shape
    biases = [
        v.key
        for v in variables
        if v.key != kernel
        and v.shape == channels
        and where.names.get(v.key, v.key).rpartition("/")[0] == home
    ]
    return biases[0] if len(biases) == 1 else None
