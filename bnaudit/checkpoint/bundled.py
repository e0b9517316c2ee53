"""Tensor-bundle checkpoints: TF1 `Saver`, TF2 `tf.train.Checkpoint`, a SavedModel's variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from bnaudit.checkpoint.base import Checkpoint, VariableInfo
from bnaudit.checkpoint.bundle import OBJECT_GRAPH_KEY, Bundle, dtype_name
from bnaudit.errors import BnauditError
from bnaudit.formats.metagraph import metas_beside
from bnaudit.vocab import CheckpointKind


class BundleCheckpoint(Checkpoint):
    """A tensor bundle: TF1 `Saver`, TF2 `tf.train.Checkpoint`, or a SavedModel's variables."""

    def __init__(
        self,
        prefix: Path,
        kind: CheckpointKind | None,
        notes: list[str],
        named_by: Path | None = None,
    ) -> None:
        self.named_by = named_by
        """The `checkpoint` state file that named this prefix, when one did."""
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

    def files(self) -> list[Path]:
        """The index, every data shard, the `.meta` files beside it (read for the variables'
        order) and the state file that named it."""
        shards = {entry.shard_id for entry in self.bundle.entries.values()}
        found = [self.bundle.index_path, *(self.bundle.data_path(s) for s in sorted(shards))]
        found += metas_beside(self.path)
        return found + ([self.named_by] if self.named_by is not None else [])

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
