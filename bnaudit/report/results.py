"""The results bnaudit reports: plain frozen dataclasses, rendered by `bnaudit.report`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bnaudit.findings import Finding, Severity, passes
from bnaudit.vocab import MatchMethod, Mode, ParamKind, ReferenceKind, Role, Status


@dataclass(frozen=True)
class FlagInfo:
    """The boolean that decides a conditional layer."""

    name: str
    """The flag's node name."""
    default: bool | None
    """The value used when nothing is fed; None when it must be fed."""


@dataclass(frozen=True)
class ParamSummary:
    """Where one parameter comes from, and the range of its values."""

    source: str
    """The Const's node name, "batch statistics" or "absent"."""
    kind: ParamKind
    min: float | None
    max: float | None


@dataclass(frozen=True)
class LayerReport:
    """One BN layer of a frozen graph, as `list-bn` reports it."""

    name: str
    """The layer's output node."""
    scope: str
    """Its name scope."""
    op: str
    """The op form: a fused op type or `decomposed`."""
    mode: Mode
    """`inference`, `training` or `conditional`."""
    flag: FlagInfo | None
    epsilon: float | None
    channels: int | None
    data_format: str | None
    params: dict[Role, ParamSummary]
    """gamma, beta, moving_mean, moving_variance."""
    findings: tuple[Finding, ...]

    @property
    def status(self) -> Status:
        return status_of(self.findings)


class _Verdict:
    """`all_findings` and `passed`, shared by the reports (graph and layer findings, threshold)."""

    layers: tuple[Any, ...]
    findings: tuple[Finding, ...]
    fail_on: Severity | None

    @property
    def all_findings(self) -> list[Finding]:
        return [*self.findings, *(f for layer in self.layers for f in layer.findings)]

    @property
    def passed(self) -> bool:
        return passes(self.all_findings, self.fail_on)


@dataclass(frozen=True)
class ListReport(_Verdict):
    """What `list-bn` found in one frozen graph."""

    graph: str
    """The graph file, as given."""
    layers: tuple[LayerReport, ...]
    findings: tuple[Finding, ...]
    """Graph-level findings."""
    fail_on: Severity | None = Severity.ERROR
    """The threshold; None never fails."""
    command: str = field(default="list-bn", init=False)


def status_of(findings: tuple[Finding, ...] | list[Finding]) -> Status:
    """`error`, `warning` or `ok` from the worst finding (info counts as ok)."""
    worst = max((f.severity for f in findings), default=Severity.INFO)
    if worst == Severity.ERROR:
        return "error"
    return "warning" if worst == Severity.WARNING else "ok"


@dataclass(frozen=True)
class StatDiff:
    """How far a frozen constant is from the checkpoint's value."""

    max_abs_diff: float | None
    """None when one side lacks the parameter."""
    max_rel_diff: float | None


@dataclass(frozen=True)
class ActivationDiff:
    """How far a tensor of the frozen graph is from the reference's, over the same inputs."""

    max_abs_diff: float
    max_rel_diff: float
    """Relative to the reference's magnitude."""
    mean_abs_diff: float
    cosine: float
    """Cosine similarity of the two tensors flattened (1.0 when both are all zeros)."""
    divergent: bool
    """Both max_abs_diff > --atol and max_rel_diff > --rtol."""


@dataclass(frozen=True)
class OutputComparison:
    """One final output of the graph (a node nobody consumes) in both runs."""

    name: str
    activation: ActivationDiff


@dataclass(frozen=True)
class LayerComparison:
    """One BN layer of the graph (or one folded into a convolution) against the checkpoint."""

    name: str
    """The layer's output node in the graph."""
    scope: str
    op: str
    """A fused op type, `decomposed`, or `folded`."""
    mode: Mode
    """`inference`, `training`, `conditional` or `folded`."""
    match_method: MatchMethod | None
    """How the checkpoint group was found: map, exact, scope, order, values; None: unmatched."""
    checkpoint_scope: str | None
    stats: dict[str, StatDiff]
    """Role -> difference; roles that neither side has are left out."""
    findings: tuple[Finding, ...]
    activation: ActivationDiff | None = None
    """The layer's output against the reference's; None without a run, or when the
    reference has no counterpart of the layer."""
    own_activation: ActivationDiff | None = None
    """The frozen layer applied (by numpy) to the reference's input for it, against the
    reference's output: the difference the layer makes itself. None when not measured
    (folded BN, a `.keras` reference, parameters that are not constants)."""

    @property
    def status(self) -> Status:
        return status_of(self.findings)


@dataclass(frozen=True)
class CompareReport(_Verdict):
    """What `compare` found between one checkpoint and one frozen graph."""

    checkpoint: str
    graph: str
    layers: tuple[LayerComparison, ...]
    """In graph order."""
    findings: tuple[Finding, ...]
    """Graph-level findings (checkpoint groups with no layer, ...)."""
    notes: tuple[str, ...] = ()
    """What was guessed on the way (which checkpoint prefix was used, ...)."""
    fail_on: Severity | None = Severity.ERROR
    first_divergent_layer: str | None = None
    """The scope of the first layer, in graph order, whose activations diverge."""
    reference: ReferenceKind | None = None
    """What the run compared against (`patched`, `meta`, `keras`); None without a run."""
    reference_reason: str | None = None
    """Why that reference (what `auto` found beside the checkpoint); None without a run."""
    outputs: tuple[OutputComparison, ...] = ()
    """The graph's final outputs in both runs."""
    command: str = field(default="compare", init=False)
