"""What a run takes: tolerances, inputs, the reference, what may run, the memory budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from bnaudit.run.chunks import ChunkBudget
from bnaudit.run.inputs import InputOptions

ReferenceChoice = Literal["auto", "patched", "meta", "keras"]


@dataclass(frozen=True)
class RunOptions:
    """How `compare` runs both graphs."""

    atol: float = 1e-5
    """Activations diverge when their max abs difference exceeds this and `rtol` too."""
    rtol: float = 1e-5
    inputs: InputOptions = field(default_factory=InputOptions)
    reference: ReferenceChoice = "auto"
    """The checkpoint's side; `auto` picks the best the checkpoint allows."""
    allow_unsafe_ops: bool = False
    """Run graphs holding ops that act outside the process."""
    save_inputs: Path | None = None
    """Write the fed arrays here (an `.npz` that `--inputs` replays)."""
    budget: ChunkBudget = field(default_factory=ChunkBudget)
    """How much one chunk of one graph may hold."""
    timeout: float = 300.0
    """Seconds one run of either graph may take (a hostile loop may never end)."""


class Progress(Protocol):
    """Where a run says what it is doing (`step`) and what it assumed (`warn`)."""

    def step(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class Silent:
    """A Progress that says nothing."""

    def step(self, text: str) -> None:
        """Ignore a progress line."""

    def warn(self, text: str) -> None:
        """Ignore a warning (it is in the report's notes too)."""
