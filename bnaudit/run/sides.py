"""What a run executes: the frozen graph and the checkpoint's reference, each a `Side`.

The reference is a GraphDef (the patched copy), a TF1 `.meta` restored from the checkpoint by
its own Saver, or a `.keras` model; it answers the frozen graph's tensor names through its
`fetches` map. Plain data: `references` builds them, `execute` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.typing import NDArray


@dataclass(frozen=True)
class Side:
    """One graph to run: its GraphDef (bnaudit's message class), feeds and a label."""

    graph_def: Any
    feeds: dict[str, NDArray[Any]]
    """Placeholder node name -> array."""
    label: str
    """How messages name it ("frozen graph", "reference")."""


@dataclass(frozen=True)
class MetaSide:
    """A TF1 training graph (`.meta`) restored from a checkpoint by its own Saver."""

    meta_graph: bytes
    """The serialized MetaGraphDef."""
    checkpoint: str
    """The prefix fed to the Saver's filename tensor."""
    restore_op: str
    filename_tensor: str
    feeds: dict[str, NDArray[Any]]
    """Placeholder node name -> array (training flags included, fed False)."""
    fetches: dict[str, str]
    """Frozen graph tensor -> this graph's tensor; tensors left out are not fetched."""
    label: str


@dataclass(frozen=True)
class KerasSide:
    """A Keras 3 `.keras` model, run in inference with its BN layers' outputs exposed."""

    path: Path
    inputs: list[str]
    """The frozen graph's data placeholders, matched to the model's inputs by name."""
    feeds: dict[str, NDArray[Any]]
    fetches: dict[str, str]
    """Frozen graph tensor -> a Keras BN layer's name (its output), `input:NAME` (what that
    layer normalizes), or `output:K` for the model's K-th output; a layer the model lacks (or
    is no BatchNormalization) is not fetched."""
    outputs: int
    """How many final outputs the frozen graph has: paired by order only when equal."""
    label: str


Reference = Side | MetaSide | KerasSide
