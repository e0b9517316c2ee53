"""Name what a file is when it is not a model bnaudit reads, by its content first.

A user who passes a checkpoint, a SavedModel, a `.meta` or a Keras file as the model deserves
a message that says what it is and what to pass instead, not "does not parse".
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf.message import DecodeError

from bnaudit.errors import BnauditError
from bnaudit.files import GRAPH_LIMIT, file_size, is_dir, read_bytes, shown
from bnaudit.formats import protos
from bnaudit.formats.signatures import DATA_SHARD, HDF5_MAGIC, LEVELDB_MAGIC, ZIP_MAGIC, head, tail

FREEZE_HINT = "freeze it with convert_variables_to_constants(_v2) and pass the .pb"


def describe_other(path: Path, data: bytes) -> str | None:
    """A one-line error for files that are recognisably something else than a model, or None."""
    told = _by_signature(path, data[:16], data[-8:], len(data))
    if told is not None:
        return told
    if path.name == "saved_model.pb" or path.name.endswith(".meta") or data[:1] == b"\x08":
        kind = container_kind(data)
        if kind:
            return f"{shown(path)} is {kind}, not a frozen graph: {FREEZE_HINT}"
    return None


def _by_signature(path: Path, first: bytes, last: bytes, size: int) -> str | None:
    """What the file's name, first and last bytes say it is, when that is not a model."""
    if size >= 48 and last == LEVELDB_MAGIC:
        return (
            f"{shown(path)} is a checkpoint index, not a graph: pass the frozen .pb as the graph "
            "(and the checkpoint prefix to `bnaudit compare`)"
        )
    if DATA_SHARD.match(path.name):
        return f"{shown(path)} is a checkpoint data file, not a graph; pass the frozen .pb"
    if first.startswith(HDF5_MAGIC):
        return f"{shown(path)} is an HDF5 (Keras weights) file, not a graph: {FREEZE_HINT}"
    if first.startswith(ZIP_MAGIC):
        return f"{shown(path)} is a zip archive (a .keras model?), not a graph: {FREEZE_HINT}"
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
        except (DecodeError, RecursionError):
            continue
        graphs = (
            [m.graph_def for m in message.meta_graphs]
            if kind == "a SavedModel"
            else [message.graph_def]
        )
        if any(g.node for g in graphs):
            return kind + (" (.meta)" if kind == "a MetaGraphDef" else "")
    return None


_WHAT = "a frozen graph (.pb or .pbtxt)"


def read_model_bytes(path: Path) -> bytes:
    """The file's bytes, or a BnauditError for what cannot be a model file at all.

    Everything that can be told from the file's name, size and first and last bytes is told
    before the whole file is read.
    """
    if is_dir(path):
        if (path / "saved_model.pb").exists():
            raise BnauditError(
                f"{shown(path)} is a SavedModel directory, not a frozen graph: {FREEZE_HINT}"
            )
        raise BnauditError(
            f"{shown(path)} is a directory; pass a frozen graph file (.pb or .pbtxt)"
        )
    size = file_size(path, _WHAT, limit=2**63)
    if size == 0:
        raise BnauditError(f"{shown(path)} is empty; pass {_WHAT}")
    first = head(path)
    told = _by_signature(path, first, tail(path, 8), size)
    if told is not None:
        raise BnauditError(told)
    if first[0] not in _FIRST_BYTES:
        raise BnauditError(
            f"{shown(path)} starts with byte {first[0]:#04x}, which neither a binary nor a text "
            f"GraphDef does (zeros, or not a graph at all); pass {_WHAT}"
        )
    return read_bytes(path, _WHAT, GRAPH_LIMIT)


# A binary message starts with a field tag (field 1-15, varint or length-delimited); a text
# one with printable ASCII, white space or a UTF-8 byte order mark.
_FIRST_BYTES = frozenset(
    {field << 3 | wire for field in range(1, 16) for wire in (0, 2)}
    | set(range(0x20, 0x7F))
    | set(b"\t\n\r\xef")
)
