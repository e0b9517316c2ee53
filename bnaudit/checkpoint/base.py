"""What every checkpoint reader offers: its variables, one tensor at a time, and its notes.

A new checkpoint format is one subclass of `Checkpoint` (see `bundled` and `keras`) and one
case in `resolve.open_checkpoint`, which turns whatever path a user passes into a reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from numpy.typing import NDArray

from bnaudit.vocab import CheckpointKind


@dataclass(frozen=True)
class VariableInfo:
    """One variable stored in a checkpoint."""

    key: str
    """The key `Checkpoint.read` takes (bundle key, or HDF5 dataset path)."""
    dtype: str
    """numpy-style dtype name (`float32`, `bfloat16`, `string`)."""
    shape: tuple[int, ...]
    """The variable's shape."""


class Checkpoint:
    """Variables from one checkpoint, whatever its format."""

    kind: CheckpointKind
    """`tf1-saver`, `tf2-object`, `saved-model`, `keras-h5`, `keras-legacy-h5`, `keras-archive`."""
    path: Path
    """The resolved checkpoint: a bundle prefix or the Keras file."""
    notes: list[str]
    """What was guessed while opening (which prefix, which file), for the report."""

    def files(self) -> list[Path]:
        """Every file reading this checkpoint may open: what bnaudit must never write over."""
        return [self.path]

    def variables(self) -> list[VariableInfo]:
        """Every stored variable, sorted by key."""
        raise NotImplementedError

    def read(self, key: str) -> NDArray[Any]:
        """One variable's value; raises KeyError for an unknown key."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CheckpointFormat(Protocol):
    """A checkpoint file format bnaudit recognises by its content (see `resolve.FILE_FORMATS`).

    Tensor bundles are not listed: they are a set of files named after a prefix, which
    `resolve` finds by their names.
    """

    name: str

    def recognizes(self, path: Path, head: bytes) -> bool:
        """True when the file's first bytes are this format's."""
        ...

    def open(self, path: Path) -> Checkpoint:
        """The checkpoint; a BnauditError with a one-line fix when it is damaged."""
        ...
