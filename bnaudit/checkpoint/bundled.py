"""Tensor-bundle checkpoints: TF1 `Saver`, TF2 `tf.train.Checkpoint`, a SavedModel's variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from bnaudit.checkpoint.base import Checkpoint, VariableInfo
from bnaudit.checkpoint.bundle import OBJECT_GRAPH_KEY, Bundle, dtype_name
from bnaudit.errors import BnauditError
from bnaudit.vocab import CheckpointKind


class BundleCheckpoint(Checkpoint):
    """A tensor bundle: TF1 `Saver`, TF2 `tf.train.Checkpoint`, or a SavedModel's variables."""

    def __init__(self, prefix: Path, kind: CheckpointKind | None, notes: list[str]) -> None:
        self.bundle = Bundle(prefix)
        missing = self.bundle.missing_shards()
        if missing:
            raise BnauditError(
                f"checkpoint data file {missing[0]} is missing; copy every "
                f"{prefix.name}.data-* file beside {prefix.name}.index"
            )
        has_graph = OBJECT_GRAPH_KEY in self.bundle.entries
        self.kind = kind or ("tf2-object" if has_graph else "tf1-saver")
        self.path = prefix
        self.notes = notes
        self._object_graph: Any | None = None

    def variables(self) -> list[VariableInfo]:
        return [
            VariableInfo(e.key, dtype_name(e.dtype), e.shape)
            for e in sorted(self.bundle.entries.values(), key=lambda e: e.key)
        ]

    def read(self, key: str) -> NDArray[Any]:
        return self.bundle.read(key)

    def object_graph(self) -> Any | None:
        """The parsed `TrackableObjectGraph`, or None for a TF1 `Saver` checkpoint."""
        if self._object_graph is None:
            self._object_graph = self.bundle.object_graph()
        return self._object_graph
