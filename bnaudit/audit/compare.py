"""`compare --no-run`: what training left in the checkpoint against what was frozen in the graph.

`audit` pairs every BN layer of the model with a group of checkpoint variables (`match`),
compares the frozen constants with the checkpoint's values, explains checkpoint layers the
graph lacks as BN folded into a convolution (`fold`), and keeps what a run needs to rebuild
the checkpoint's side (`StaticAudit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.detect import BnLayer, GraphScan, find_layers
from bnaudit.audit.ema import intended_values, shadows
from bnaudit.audit.fold import FoldedLayer, folded_rows
from bnaudit.audit.frozenfrom import frozen_from
from bnaudit.audit.health import layer_findings
from bnaudit.audit.match import Group, GroupValues, checkpoint_groups, pair_layers
from bnaudit.audit.options import CompareOptions, Tolerances
from bnaudit.audit.valuegroups import value_groups
from bnaudit.checkpoint.resolve import open_checkpoint
from bnaudit.errors import BnauditError
from bnaudit.files import shown
from bnaudit.findings import Finding, at_layer, finding
from bnaudit.model import load_model
from bnaudit.model.graph import Graph
from bnaudit.model.runnable import unrunnable
from bnaudit.report.results import CompareReport, LayerComparison, StatDiff
from bnaudit.vocab import ROLES, STAT_ROLES, MatchMethod, Role


@dataclass(frozen=True)
class PairedLayer:
    """A graph layer and the checkpoint's values for it."""

    layer: BnLayer
    values: dict[Role, NDArray[Any] | None]
    """Role -> the checkpoint's value; None when the checkpoint lacks that role."""


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
    read_files: tuple[Path, ...] = ()
    """Every file the audit read or a run may read: the model and the checkpoint's files."""


@dataclass(frozen=True)
class _Judged:
    """One checkpoint against the graph: report rows and what a run needs."""

    rows: list[tuple[int, LayerComparison]]
    paired: list[PairedLayer]
    unexplained: list[Group]
    refoldable: list[FoldedLayer]
    notes: tuple[str, ...]
    resolved: Path
    kind: str
    keys: frozenset[str]
    files: tuple[Path, ...]


def audit(checkpoint: Path, model: Path, options: CompareOptions | None = None) -> StaticAudit:
    """Pair the model's BN layers with the checkpoint's and compare their values; when they
    differ, name the checkpoint beside it (or under `options.search`) they do match."""
    options = options or CompareOptions()
    _refuse_swapped(checkpoint, model)
    graph = load_model(model)
    scan = find_layers(graph)
    judged = _judge(checkpoint, graph, scan, options, strict=True)
    findings = [finding("not-runnable", reason) for reason in unrunnable(graph)]
    findings += [_missing_in_graph(group) for group in judged.unexplained]
    rows = sorted(judged.rows, key=lambda row: row[0])
    if not rows:
        findings.append(_NO_BN)
    read_files = (model, *judged.files)
    notes = judged.notes
    if any(f.code in _STALE for _, row in rows for f in row.findings):
        opened: list[Path] = []
        looked = frozen_from(
            judged.resolved,
            options.search,
            lambda candidate: _clean(candidate, graph, scan, options, opened),
        )
        read_files += (*looked.tried, *opened)
        if looked.found:
            findings.insert(0, _wrong_checkpoint(judged.resolved, list(looked.found)))
        notes += tuple(
            f"{shown(path)} could not be read while looking for the checkpoint the graph "
            f"was frozen from ({why.rstrip('.')}); it may be that one"
            for path, why in looked.unreadable[:3]
        )
    resolved = str(judged.resolved)
    report = CompareReport(
        checkpoint=str(checkpoint) if str(checkpoint) == resolved else f"{checkpoint} ({resolved})",
        graph=str(model),
        layers=tuple(row for _, row in rows),
        findings=tuple(findings),
        notes=notes,
        fail_on=options.fail_on,
    )
    return StaticAudit(
        report,
        graph,
        tuple(scan.layers),
        tuple(sorted(judged.paired, key=lambda p: p.layer.position)),
        judged.resolved,
        judged.kind,
        judged.keys,
        folded=tuple(sorted(judged.refoldable, key=lambda f: f.candidate.position)),
        read_files=read_files,
    )


def _judge(
    checkpoint: Path, graph: Graph, scan: GraphScan, options: CompareOptions, strict: bool
) -> _Judged:
    """Pair, compare and explain folds against one checkpoint."""
    tolerances = options.tolerances
    with open_checkpoint(checkpoint) as ckpt:
        groups = checkpoint_groups(ckpt)
        values = GroupValues(ckpt)
        pairs = pair_layers(
            scan.layers, groups, list(options.maps), lambda g: values.of(g, "moving_mean")
        )
        # A layer no named group pairs may have its variables under names no BN uses.
        unpaired = [p.layer for p in pairs if p.layer is not None and p.group is None]
        if unpaired and (found := value_groups(unpaired, ckpt, groups)):
            groups += found
            pairs = pair_layers(
                scan.layers, groups, list(options.maps), lambda g: values.of(g, "moving_mean")
            )
        shadow_of = shadows(ckpt)
        rows = []
        paired = []
        for pair in pairs:
            if pair.layer is None:
                continue
            theirs: dict[Role, NDArray[Any] | None] = {}
            averaged: list[Finding] = []
            if pair.group is not None:
                theirs, averaged = intended_values(
                    pair.layer, pair.group, values, shadow_of, tolerances
                )
                paired.append(PairedLayer(pair.layer, theirs))
            rows.append(
                _compare_layer(pair.layer, pair.group, pair.method, theirs, tolerances, averaged)
            )
        leftover = [pair.group for pair in pairs if pair.layer is None and pair.group is not None]
        bn_keys = {key for group in groups for key in group.keys.values()}
        folded, unexplained, refoldable = folded_rows(graph, leftover, values, tolerances, bn_keys)
        if strict:
            _refuse_empty(ckpt.path, graph.path, scan.layers, groups, rows or folded)
        return _Judged(
            rows=[*rows, *folded],
            paired=paired,
            unexplained=unexplained,
            refoldable=refoldable,
            notes=tuple(ckpt.notes),
            resolved=ckpt.path,
            kind=ckpt.kind,
            keys=frozenset(v.key for v in ckpt.variables()),
            files=tuple(ckpt.files()),
        )


_STALE = frozenset({"stats-mismatch", "folded-mismatch"})


def _clean(
    candidate: Path, graph: Graph, scan: GraphScan, options: CompareOptions, opened: list[Path]
) -> bool:
    """Whether every layer compared against `candidate` matches it (and one was compared);
    the files it read are added to `opened`."""
    judged = _judge(candidate, graph, scan, options, strict=False)
    opened += judged.files
    findings = [f for _, row in judged.rows for f in row.findings]
    return (
        bool(judged.rows)
        and not judged.unexplained
        and not any(f.code in _STALE or f.code in ("unmatched", "shape-mismatch") for f in findings)
    )


def _wrong_checkpoint(given: Path, found: list[Path]) -> Finding:
    names = ", ".join(str(p) for p in found[:3]) + (" ..." if len(found) > 3 else "")
    return finding(
        "wrong-checkpoint",
        f"the graph matches {names} exactly; you passed {given}",
        fix=f"compare with {found[0]}, or freeze again from {given.name}",
    )


_NO_BN = finding(
    "no-bn",
    "neither the graph nor the checkpoint has a batch-normalization layer: nothing to audit",
)


def _refuse_empty(
    checkpoint: Path, model: Path, layers: list[BnLayer], groups: list[Group], explained: object
) -> None:
    """A graph and checkpoint that share no BN at all: one of them is the wrong file."""
    with_stats = [g for g in groups if g.has_stats]
    if layers and not groups:
        raise BnauditError(
            f"{checkpoint} holds no BN variables: none is named like one (gamma, beta, "
            "moving_mean, moving_variance, a Keras BatchNormalization layer) nor equals the "
            "graph's BN constants: pass the checkpoint the graph was frozen from"
        )
    if not layers and with_stats and not explained:
        raise BnauditError(
            f"{model} has no BN layer, and no convolution the checkpoint's BN explains "
            "as folded: nothing to compare; pass the graph frozen from this model"
        )


def _missing_in_graph(group: Group) -> Finding:
    return finding(
        "missing-in-graph",
        f"the checkpoint's BN layer {group.scope} has no counterpart in the graph: the "
        "graph was built from another model definition, or the layer was removed",
        group.scope,
    )


_GRAPH_SUFFIXES = (".pb", ".pbtxt")


def _refuse_swapped(checkpoint: Path, model: Path) -> None:
    """The commonest slip, GRAPH before CHECKPOINT, deserves a message that says just that."""
    looks_like_graph = checkpoint.is_file() and checkpoint.suffix in _GRAPH_SUFFIXES
    if (
        looks_like_graph
        and checkpoint.name != "saved_model.pb"
        and model.suffix not in (_GRAPH_SUFFIXES)
    ):
        raise BnauditError(
            f"the arguments look swapped: {checkpoint} is a graph and {model} is not; "
            "compare takes the CHECKPOINT first, then the GRAPH"
        )


def _diff(ours: NDArray[Any], theirs: NDArray[Any]) -> StatDiff:
    delta = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    if delta.size == 0:
        return StatDiff(0.0, 0.0)
    relative = delta / np.maximum(np.abs(theirs.astype(np.float64)), 1e-12)
    return StatDiff(float(np.nanmax(delta)), float(np.nanmax(relative)))


def _compare_layer(
    layer: BnLayer,
    group: Group | None,
    method: MatchMethod | None,
    values: dict[Role, NDArray[Any] | None],
    tolerances: Tolerances,
    averaged: list[Finding],
) -> tuple[int, LayerComparison]:
    """The layer against the checkpoint's values for it (`values`, see `ema`)."""
    findings = layer_findings(layer) + averaged
    stats: dict[str, StatDiff] = {}
    missing: list[Role] = []
    differing: list[str] = []
    reshaped: list[tuple[Role, int, int]] = []
    for role in ROLES if group is not None else ():
        assert group is not None
        param = layer.params[role]
        theirs = values.get(role)
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
            reshaped.append((role, ours.size, theirs.size))
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
    if reshaped and group is not None:
        role, ours_size, theirs_size = reshaped[0]
        findings.append(
            finding(
                "shape-mismatch",
                f"the checkpoint's {group.scope} has {theirs_size} channels ({role}), the "
                f"graph's layer {ours_size}: the checkpoint is from another architecture",
            )
        )
    findings = at_layer(findings, layer.scope)
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
    group: Group | None, missing: list[Role], differing: list[str]
) -> list[Finding]:
    if group is None:
        return [
            finding(
                "unmatched",
                "no BN variables in the checkpoint pair with this layer: the graph and the "
                "checkpoint come from different models",
            )
        ]
    findings = []
    if any(role in STAT_ROLES for role in missing):
        findings.append(
            finding(
                "missing-in-checkpoint",
                "the checkpoint has no moving statistics for this layer, so restoring keeps "
                "their initial 0/1",
            )
        )
    elif missing:
        findings.append(
            finding(
                "missing-in-checkpoint",
                f"the checkpoint lacks {', '.join(missing)} for this layer: it was saved from "
                "a different layer configuration (scale/center)",
                fix="pass the matching checkpoint",
            )
        )
    if differing:
        findings.append(
            finding(
                "stats-mismatch",
                "frozen values differ from the checkpoint: the graph was frozen from another "
                "checkpoint (an earlier step or another run)",
            )
        )
    return findings
