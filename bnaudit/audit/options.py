"""What the static audits take: the failure threshold, tolerances and the user's name maps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bnaudit.findings import Severity


@dataclass(frozen=True)
class Tolerances:
    """When a frozen value counts as different from the checkpoint's: |a - b| > atol + rtol*|b|."""

    stat_atol: float = 1e-6
    stat_rtol: float = 1e-6
    fold_atol: float = 1e-5
    """Folding recomputes in float32, so its check is looser than a copied constant's."""
    fold_rtol: float = 1e-4


@dataclass(frozen=True)
class ListOptions:
    """How `list-bn` judges a model."""

    fail_on: Severity | None = Severity.ERROR
    """The lowest severity that fails the report; None never fails."""


@dataclass(frozen=True)
class CompareOptions:
    """How `compare` pairs and judges a model against a checkpoint."""

    tolerances: Tolerances = field(default_factory=Tolerances)
    maps: tuple[tuple[str, str], ...] = ()
    """`--map OLD=NEW` rules, applied in order to graph names before pairing."""
    fail_on: Severity | None = Severity.ERROR
    """The lowest severity that fails the report; None never fails."""
    search: Path | None = None
    """`--search DIR`: where else to look for the checkpoint the graph was frozen from."""
