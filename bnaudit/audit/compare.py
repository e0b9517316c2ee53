"""`compare --no-run`: what training left in the checkpoint against what was frozen in the graph."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.detect import BnLayer, find_layers
from bnaudit.audit.fold import FoldCandidate, check_fold, find_candidates
from bnaudit.audit.health import layer_findings
from bnaudit.audit.match import Group, pair_layers
from bnaudit.checkpoint.base import Checkpoint
from bnaudit.checkpoint.groups import CheckpointBnGroup, bn_groups, is_bookkeeping
from bnaudit.checkpoint.resolve import open_checkpoint
from bnaudit.errors import BnauditError
from bnaudit.findings import Finding, Severity
from bnaudit.model import load_model
from bnaudit.model.graph import Graph
from bnaudit.names import normalize, scope_of
from bnaudit.report.results import CompareReport, LayerComparison, StatDiff, Tolerances
from bnaudit.vocab import ROLES, STAT_ROLES

SAVER_FIX = (
    "save with a Saver over all global variables (tf.compat.v1.train.Saver() or "
    "var_list=tf.compat.v1.global_variables()), not only the trainable ones"
)


@dataclass(frozen=True)
class PairedLayer:
    """A graph layer and the checkpoint's values for it."""

    layer: BnLayer
    values: dict[str, NDArray[Any] | None]
    """Role -> the checkpoint's value; None when the checkpoint lacks that role."""


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
    stats: dict[str, NDArray[Any] | None]
    """Role -> the checkpoint's BN value."""
    epsilon: float
    """The epsilon that best explains the frozen fold (a fold does not record it)."""


@dataclass(frozen=True)
class StaticAudit:
    """The static report and what a run needs to rebuild the checkpoint's side."""

    report: CompareReport
    graph: Graph
    layers: tuple[BnLayer, ...]
    """Every BN layer detection found, in graph order."""
    paired: tuple[PairedLayer, ...]
    """Every graph layer paired with a checkpoint group, in graph order."""
    checkpoint_path: Path
    """The resolved checkpoint: a bundle prefix or a Keras file."""
    checkpoint_kind: str
    """`Checkpoint.kind`: `tf1-saver`, `tf2-object`, `keras-archive`, ..."""
    checkpoint_keys: frozenset[str]
    """Every variable key the checkpoint holds."""
    folded: tuple[FoldedLayer, ...] = ()
    """Folded BN the checkpoint can refold (kernel and statistics present), in graph order."""


def compare(
    checkpoint: Path,
    graph_path: Path,
    tolerances: Tolerances | None = None,
    maps: list[tuple[str, str]] | None = None,
    fail_on: Severity | None = Severity.ERROR,
) -> CompareReport:
    """Pair the graph's BN layers with the checkpoint's and compare their values."""
    return audit(checkpoint, graph_path, tolerances, maps, fail_on).report


def audit(
    checkpoint: Path,
    graph_path: Path,
    tolerances: Tolerances | None = None,
    maps: list[tuple[str, str]] | None = None,
    fail_on: Severity | None = Severity.ERROR,
) -> StaticAudit:
    """`compare`, keeping the graph and the checkpoint's BN values of every paired layer."""
    tolerances = tolerances or Tolerances()
    _refuse_swapped(checkpoint, graph_path)
    graph = load_model(graph_path)
    scan = find_layers(graph)
    with open_checkpoint(checkpoint) as ckpt:
        groups = _groups(ckpt)
        values = _Values(ckpt)
        pairs = pair_layers(scan.layers, groups, maps or [], lambda g: values.of(g, "moving_mean"))
        rows = [
            _compare_layer(pair.layer, pair.group, pair.method, values, tolerances)
            for pair in pairs
            if pair.layer is not None
        ]
        paired = [
            PairedLayer(pair.layer, {role: values.of(pair.group, role) for role in ROLES})
            for pair in pairs
            if pair.layer is not None and pair.group is not None
        ]
        leftover = [pair.group for pair in pairs if pair.layer is None and pair.group is not None]
        folded, unexplained, refoldable = _folded_rows(graph, leftover, values, tolerances)
        notes = tuple(ckpt.notes)
        resolved = str(ckpt.path)
        where = (ckpt.path, ckpt.kind, frozenset(v.key for v in ckpt.variables()))
    if not rows and not folded:
        raise BnauditError(
            f"{graph_path} has no BN layer, and no convolution the checkpoint's BN explains "
            "as folded: nothing to compare; pass the graph frozen from this model"
        )
    findings = [
        Finding(
            "missing-in-graph",
            Severity.ERROR,
            f"the checkpoint's BN layer {group.scope} has no counterpart in the graph: the "
            "graph was built from another model definition, or the layer was removed; "
            "freeze the model this checkpoint belongs to (or pair names with --map OLD=NEW)",
            group.scope,
        )
        for group in unexplained
    ]
    rows = sorted([*rows, *folded], key=lambda row: row[0])
    report = CompareReport(
        checkpoint=str(checkpoint) if str(checkpoint) == resolved else f"{checkpoint} ({resolved})",
        graph=str(graph_path),
        layers=tuple(row for _, row in rows),
        findings=tuple(findings),
        notes=notes,
        fail_on=fail_on,
    )
    paired.sort(key=lambda p: p.layer.position)
    refoldable.sort(key=lambda f: f.candidate.position)
    return StaticAudit(
        report, graph, tuple(scan.layers), tuple(paired), *where, folded=tuple(refoldable)
    )


_GRAPH_SUFFIXES = (".pb", ".pbtxt")


def _refuse_swapped(checkpoint: Path, graph_path: Path) -> None:
    """The commonest slip, GRAPH before CHECKPOINT, deserves a message that says just that."""
    looks_like_graph = checkpoint.is_file() and checkpoint.suffix in _GRAPH_SUFFIXES
    if (
        looks_like_graph
        and checkpoint.name != "saved_model.pb"
        and graph_path.suffix not in (_GRAPH_SUFFIXES)
    ):
        raise BnauditError(
            f"the arguments look swapped: {checkpoint} is a graph and {graph_path} is not; "
            "compare takes the CHECKPOINT first, then the GRAPH"
        )


def _groups(ckpt: Checkpoint) -> list[Group]:
    found = bn_groups(ckpt)
    if not found:
        raise BnauditError(
            f"{ckpt.path} holds no BN variables (gamma/beta/moving_mean/moving_variance or a "
            "Keras BatchNormalization layer): pass the checkpoint the graph was trained from"
        )
    shapes = {v.key: v.shape for v in ckpt.variables()}
    return [_as_group(g, index, shapes) for index, g in enumerate(found)]


def _as_group(group: CheckpointBnGroup, index: int, shapes: dict[str, tuple[int, ...]]) -> Group:
    channels = None
    for role in ("moving_variance", "moving_mean", "gamma", "beta"):
        if role in group.keys:
            channels = int(np.prod(shapes.get(group.keys[role], (0,))))
            break
    return Group(
        scope=group.scope,
        names=(group.scope, *group.names),
        keys=dict(group.keys),
        channels=channels,
        order=index if group.order is None else group.order,
    )


class _Values:
    """The checkpoint's BN values, each tensor read once however often it is compared."""

    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt = ckpt
        self._read: dict[str, NDArray[Any]] = {}

    def of(self, group: Group, role: str) -> NDArray[Any] | None:
        key = group.keys.get(role)
        if key is None:
            return None
        if key not in self._read:
            self._read[key] = np.asarray(self.ckpt.read(key))
        return self._read[key]


def _diff(ours: NDArray[Any], theirs: NDArray[Any]) -> StatDiff:
    delta = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    if delta.size == 0:
        return StatDiff(0.0, 0.0)
    relative = delta / np.maximum(np.abs(theirs.astype(np.float64)), 1e-12)
    return StatDiff(float(np.nanmax(delta)), float(np.nanmax(relative)))


def _compare_layer(
    layer: BnLayer,
    group: Group | None,
    method: str | None,
    values: _Values,
    tolerances: Tolerances,
) -> tuple[int, LayerComparison]:
    findings = layer_findings(layer)
    stats: dict[str, StatDiff] = {}
    missing: list[str] = []
    differing: list[str] = []
    for role in ROLES if group is not None else ():
        assert group is not None
        param = layer.params[role]
        theirs = values.of(group, role)
        if theirs is None:
            if param.kind == "const":
                missing.append(role)
                stats[role] = StatDiff(None, None)
            continue
        if param.kind != "const" or param.value is None:
            stats[role] = StatDiff(None, None)  # batch statistics: nothing frozen to compare
            continue
        ours = param.value
        if ours.size != theirs.size:
            differing.append(f"{role} (shape {ours.shape} vs {theirs.shape})")
            stats[role] = StatDiff(None, None)
            continue
        ours, theirs = ours.reshape(-1), theirs.reshape(-1)
        stats[role] = _diff(ours, theirs)
        same = np.isclose(
            ours, theirs, atol=tolerances.stat_atol, rtol=tolerances.stat_rtol, equal_nan=True
        )
        if not np.all(same):
            differing.append(role)
    findings += _pairing_findings(group, missing, differing)
    findings = [Finding(f.code, f.severity, f.message, layer.scope) for f in findings]
    row = LayerComparison(
        name=layer.name,
        scope=layer.scope,
        op=layer.op,
        mode=layer.mode,
        match_method=method,
        checkpoint_scope=None if group is None else group.scope,
        stats=stats,
        findings=tuple(findings),
    )
    return layer.position, row


def _pairing_findings(
    group: Group | None, missing: list[str], differing: list[str]
) -> list[Finding]:
    if group is None:
        return [
            Finding(
                "unmatched",
                Severity.ERROR,
                "no BN variables in the checkpoint pair with this layer: the graph and the "
                "checkpoint come from different models; pass the right checkpoint, or pair "
                "names with --map OLD=NEW",
            )
        ]
    findings = []
    if any(role in STAT_ROLES for role in missing):
        findings.append(
            Finding(
                "missing-in-checkpoint",
                Severity.ERROR,
                "the checkpoint has no moving statistics for this layer, so restoring keeps "
                f"their initial 0/1: {SAVER_FIX}",
            )
        )
    elif missing:
        findings.append(
            Finding(
                "missing-in-checkpoint",
                Severity.ERROR,
                f"the checkpoint lacks {', '.join(missing)} for this layer: it was saved from "
                "a different layer configuration (scale/center); pass the matching checkpoint",
            )
        )
    if differing:
        findings.append(
            Finding(
                "stats-mismatch",
                Severity.ERROR,
                "frozen values differ from the checkpoint: the graph was frozen from another "
                "checkpoint (an earlier step or another run); freeze again from this one",
            )
        )
    return findings


def _folded_rows(
    graph: Any,
    groups: list[Group],
    values: _Values,
    tolerances: Tolerances,
) -> tuple[list[tuple[int, LayerComparison]], list[Group], list[FoldedLayer]]:
    """Explain checkpoint groups with no graph layer as BN folded into a convolution."""
    if not groups:
        return [], [], []
    candidates = find_candidates(graph)
    rows = []
    unexplained = []
    refoldable = []
    free = list(candidates)
    for group in sorted(groups, key=lambda g: g.order):
        candidate = _candidate_for(group, free)
        if candidate is None:
            unexplained.append(group)
            continue
        free.remove(candidate)
        row, folded = _fold_row(candidate, group, values, tolerances)
        rows.append((candidate.position, row))
        if folded is not None:
            refoldable.append(folded)
    return rows, unexplained, refoldable


def _candidate_for(group: Group, candidates: list[FoldCandidate]) -> FoldCandidate | None:
    """The fold candidate with the group's channels named after its scope, else the first."""
    fitting = [c for c in candidates if c.offset.shape[0] == group.channels]
    names = {normalize(n) for n in group.names}
    for candidate in fitting:
        if normalize(candidate.scope) in names:
            return candidate
    return min(fitting, key=lambda c: c.position, default=None)


def _fold_row(
    candidate: FoldCandidate, group: Group, values: _Values, tolerances: Tolerances
) -> tuple[LayerComparison, FoldedLayer | None]:
    ckpt = values.ckpt
    kernel_key, bias_key = _kernel_keys(candidate, group, ckpt)
    stats_values = {role: values.of(group, role) for role in ROLES}
    findings: list[Finding] = []
    stats: dict[str, StatDiff] = {}
    folded = None
    if kernel_key is None or any(stats_values[r] is None for r in STAT_ROLES):
        findings.append(
            Finding(
                "folded",
                Severity.INFO,
                "BN was folded into the preceding layer's weights; the checkpoint lacks the "
                "kernel or statistics to verify the fold",
            )
        )
    else:
        kernel = ckpt.read(kernel_key)
        bias = None if bias_key is None else ckpt.read(bias_key)
        check = check_fold(candidate, kernel, bias, stats_values)
        folded = FoldedLayer(group.scope, candidate, kernel, bias, stats_values, check.epsilon)
        stats["folded"] = StatDiff(check.max_abs_diff, check.max_rel_diff)
        limit = tolerances.fold_atol + tolerances.fold_rtol * float(
            np.max(np.abs(np.concatenate([candidate.weights.ravel(), candidate.offset.ravel()])))
        )
        if check.max_abs_diff <= limit:
            findings.append(
                Finding(
                    "folded",
                    Severity.INFO,
                    f"BN was folded into {candidate.linear} (optimize_for_inference); the "
                    f"folded weights match this checkpoint (epsilon {check.epsilon:g})",
                )
            )
        else:
            findings.append(
                Finding(
                    "folded-mismatch",
                    Severity.ERROR,
                    f"BN was folded into {candidate.linear}, but not from this checkpoint's "
                    "kernel and statistics: the fold used stale statistics or another "
                    "checkpoint; freeze and fold again from this checkpoint",
                )
            )
    row = LayerComparison(
        name=candidate.name,
        scope=group.scope,
        op="folded",
        mode="folded",
        match_method="folded",
        checkpoint_scope=group.scope,
        stats=stats,
        findings=tuple(Finding(f.code, f.severity, f.message, group.scope) for f in findings),
    )
    return row, folded


def _kernel_keys(
    candidate: FoldCandidate, group: Group, ckpt: Checkpoint
) -> tuple[str | None, str | None]:
    """The checkpoint's unfolded kernel and bias for the candidate's linear op."""
    bn_keys = set(group.keys.values())
    variables = [v for v in ckpt.variables() if v.key not in bn_keys and not is_bookkeeping(v.key)]
    shaped = [v for v in variables if v.shape == candidate.weights.shape]
    scope = normalize(scope_of(candidate.linear))
    scoped = [v for v in shaped if normalize(v.key).startswith(scope + "/")]
    chosen = scoped or shaped
    if len(chosen) != 1:
        return None, None
    kernel = chosen[0].key
    home = kernel.rsplit("/", 1)[0]
    channels = candidate.offset.shape
    biases = [
        v.key
        for v in variables
        if v.key.rsplit("/", 1)[0] == home and v.shape == channels and v.key != kernel
    ]
    return kernel, biases[0] if len(biases) == 1 else None
