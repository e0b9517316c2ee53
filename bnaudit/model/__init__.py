"""Read a deployed model into a `Graph`, whatever format it comes in.

Each format is one module with a class that answers two questions: does it recognise these
bytes (`recognizes`), and what graph do they hold (`load`). `load_model` asks the formats in
`FORMATS` in turn; a new format is one new module and one line here. Files recognisably of
another kind (a checkpoint, a Keras weights file) get a message naming what they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bnaudit.errors import BnauditError
from bnaudit.model.graph import Graph
from bnaudit.model.graphdef import GraphDefFormat
from bnaudit.model.sniff import describe_other, read_model_bytes


class ModelFormat(Protocol):
    """One deployed-model format."""

    name: str

    def recognizes(self, path: Path, data: bytes) -> bool:
        """True when the file's content is of this format (cheap: no full parse needed)."""
        ...

    def load(self, path: Path, data: bytes) -> Graph:
        """The model's graph; a BnauditError with a one-line fix when it is damaged."""
        ...


FORMATS: tuple[ModelFormat, ...] = (GraphDefFormat(),)
"""Tried in order; the GraphDef, which has no signature, comes last."""


def load_model(path: Path) -> Graph:
    """Read the model at `path`, or raise a BnauditError that says what to pass instead."""
    data = read_model_bytes(path)
    for model_format in FORMATS:
        if model_format.recognizes(path, data):
            return model_format.load(path, data)
    raise BnauditError(
        describe_other(path, data) or f"{path} is not a model bnaudit reads; pass a frozen graph"
    )
