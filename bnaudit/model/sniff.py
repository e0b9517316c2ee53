"""Name what a file is when it is not a model bnaudit reads, by its content first.

A user who passes a checkpoint, a SavedModel, a `.meta` or a Keras file as the model deserves
a message that says what it is and what to pass instead, not "does not parse".
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import DecodeError

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.formats.signatures import DATA_SHARD, HDF5_MAGIC, LEVELDB_MAGIC, ZIP_MAGIC

FREEZE_HINT = "freeze it with convert_variables_to_constants(_v2) and pass the .pb"


def describe_other(path: Path, data: bytes) -> str | None:
    """A one-line error for files that are recognisably something else than a model, or None."""
    name = path.name
    if len(data) >= 48 and data[-8:] == LEVELDB_MAGIC:
        return (
            f"{path} is a checkpoint index, not a graph: pass the frozen .pb as the graph "
            "(and the checkpoint prefix to `bnaudit compare`)"
        )
    if DATA_SHARD.match(name):
        return f"{path} is a checkpoint data file, not a graph; pass the frozen .pb"
    if data.startswith(HDF5_MAGIC):
        return f"{path} is an HDF5 (Keras weights) file, not a graph: {FREEZE_HINT}"
    if data.startswith(ZIP_MAGIC):
        return f"{path} is a zip archive (a .keras model?), not a graph: {FREEZE_HINT}"
    if name == "saved_model.pb" or name.endswith(".meta") or data[:1] == b"\x08":
        kind = container_kind(data)
        if kind:
            return f"{path} is {kind}, not a frozen graph: {FREEZE_HINT}"
    return None


def container_kind(data: bytes) -> str | None:
    """'a SavedModel' / 'a MetaGraphDef (.meta)' when the bytes parse as one with a graph."""
    for kind, cls in (
        ("a SavedModel", protos.SavedModel),
        ("a MetaGraphDef", protos.MetaGraphDef),
    ):
        message = cls()
        try:
            message.ParseFromString(data)
        except DecodeError:
            continue
        graphs = (
            [m.graph_def for m in message.meta_graphs]
            if kind == "a SavedModel"
            else [message.graph_def]
        )
        if any(g.node for g in graphs):
            return kind + (" (.meta)" if kind == "a MetaGraphDef" else "")
    return None


def read_model_bytes(path: Path) -> bytes:
    """The file's bytes, or a BnauditError for what cannot be a model file at all."""
    if not path.exists():
        raise BnauditError(f"{path}: no such file; pass a frozen graph (.pb or .pbtxt)")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise BnauditError(
                f"{path} is a SavedModel directory, not a frozen graph: {FREEZE_HINT}"
            )
        raise BnauditError(f"{path} is a directory; pass a frozen graph file (.pb or .pbtxt)")
    data = path.read_bytes()
    if not data:
        raise BnauditError(f"{path} is empty; pass a frozen graph (.pb or .pbtxt)")
    return data
