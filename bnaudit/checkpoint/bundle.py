"""Read TensorFlow tensor-bundle checkpoints (`PREFIX.index` + `PREFIX.data-*`) without TensorFlow.

The `.index` file is a LevelDB-format table mapping each variable's key to a serialized
`BundleEntryProto` (dtype, shape, shard, offset, size); the empty key holds the
`BundleHeaderProto`. The tensor bytes sit at `offset` in `PREFIX.data-NNNNN-of-MMMMM`. Only
the index is read when a `Bundle` is opened; `Bundle.read` seeks to one tensor, because
checkpoints can be many gigabytes. CRCs are not checked (pure-Python crc32c is too slow for
big tensors), but every size is.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray

from bnaudit.errors import BnauditError
from bnaudit.files import INDEX_LIMIT, file_size, read_bytes, shown
from bnaudit.formats.protos import (
    DATA_TYPES,
    BundleEntryProto,
    BundleHeaderProto,
    TrackableObjectGraph,
)
from bnaudit.formats.signatures import LEVELDB_MAGIC

MAX_TENSOR_BYTES = 256 * 2**20
"""The largest tensor bnaudit reads from a checkpoint."""
MAX_OBJECT_GRAPH_BYTES = 64 * 2**20
"""A model's object graph is kilobytes; a hostile one could declare gigabytes."""
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
"""The string tensor in which `tf.train.Checkpoint` stores its object graph."""

_FOOTER_SIZE = 48
_TRAILER_SIZE = 5  # compression byte + masked crc32c after every block

_DT_STRING = DATA_TYPES["DT_STRING"]
_DT_BFLOAT16 = DATA_TYPES["DT_BFLOAT16"]

# TensorFlow DataType number -> (name users know, little-endian numpy dtype of the stored bytes).
_NUMERIC: dict[int, tuple[str, str]] = {
    DATA_TYPES["DT_FLOAT"]: ("float32", "<f4"),
    DATA_TYPES["DT_DOUBLE"]: ("float64", "<f8"),
    DATA_TYPES["DT_HALF"]: ("float16", "<f2"),
    _DT_BFLOAT16: ("bfloat16", "<u2"),  # widened to float32 on read
    DATA_TYPES["DT_INT8"]: ("int8", "i1"),
    DATA_TYPES["DT_INT16"]: ("int16", "<i2"),
    DATA_TYPES["DT_INT32"]: ("int32", "<i4"),
    DATA_TYPES["DT_INT64"]: ("int64", "<i8"),
    DATA_TYPES["DT_UINT8"]: ("uint8", "u1"),
    DATA_TYPES["DT_UINT16"]: ("uint16", "<u2"),
    DATA_TYPES["DT_UINT32"]: ("uint32", "<u4"),
    DATA_TYPES["DT_UINT64"]: ("uint64", "<u8"),
    DATA_TYPES["DT_BOOL"]: ("bool", "?"),
    DATA_TYPES["DT_COMPLEX64"]: ("complex64", "<c8"),
    DATA_TYPES["DT_COMPLEX128"]: ("complex128", "<c16"),
}
_TYPE_NAMES = {number: name for name, number in DATA_TYPES.items()}


def dtype_name(dtype: int) -> str:
    """A readable name for a TensorFlow DataType number (`float32`, `string`, `DT_VARIANT`)."""
    if dtype in _NUMERIC:
        return _NUMERIC[dtype][0]
    if dtype == _DT_STRING:
        return "string"
    return _TYPE_NAMES.get(dtype, f"dtype {dtype}")


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor of a bundle lives."""

    key: str
    """The checkpoint key (`model/bn1/gamma`, `model/_operations/2/.../VARIABLE_VALUE`)."""
    dtype: int
    """TensorFlow DataType number (1 = float32); `dtype_name` makes it readable."""
    shape: tuple[int, ...]
    """The tensor's shape."""
    shard_id: int
    """Which `.data-NNNNN-of-MMMMM` file holds the bytes."""
    offset: int
    """Byte offset of the tensor in that shard."""
    size: int
    """Number of bytes stored."""
    sliced: bool = False
    """True for a partitioned variable, whose bytes are stored as separate slices."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`; return (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def snappy_decompress(data: bytes) -> bytes:
    """Decompress one raw snappy block (LevelDB's compression type 1).

    TensorFlow writes bundles uncompressed, but the table format allows snappy and the raw
    format is small enough to decode here rather than depend on a native library.
    """
    length, pos = _varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths above 60 spill into 1-4 extra bytes
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            if pos + size > len(data):
                raise ValueError("truncated snappy literal")
            out += data[pos : pos + size]
            pos += size
            continue
        if kind == 1:
            size = ((tag >> 2) & 7) + 4
            back = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            size = (tag >> 2) + 1
            back = int.from_bytes(data[pos : pos + width], "little")
            pos += width
        if back == 0 or back > len(out):
            raise ValueError("bad snappy copy offset")
        for _ in range(size):  # byte by byte: a copy may overlap its own output
            out.append(out[-back])
    if len(out) != length:
        raise ValueError("snappy length mismatch")
    return bytes(out)


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of one table block, keys rebuilt from their shared prefixes."""
    if len(block) < 4:
        raise ValueError("block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 * (num_restarts + 1)
    if end < 0:
        raise ValueError("bad restart count")
    entries = []
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > end:
            raise ValueError("bad block entry")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


class Bundle:
    """A tensor-bundle checkpoint opened from its prefix; only the `.index` is read on open."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        self.num_shards = 1
        self.entries: dict[str, BundleEntry] = {}
        data = read_bytes(
            self.index_path,
            "the prefix of a TensorFlow checkpoint (PREFIX.index must exist)",
            INDEX_LIMIT,
        )
        try:
            self._parse_index(data)
        except (ValueError, IndexError, struct.error, DecodeError) as exc:
            raise BnauditError(
                f"{self.index_path} is not a valid checkpoint index ({exc}); "
                "the checkpoint is truncated or corrupt, pass an intact one"
            ) from None

    def _parse_index(self, data: bytes) -> None:
        if len(data) < _FOOTER_SIZE:
            raise ValueError(f"{len(data)} bytes, shorter than a table footer")
        footer = data[-_FOOTER_SIZE:]
        if footer[-8:] != LEVELDB_MAGIC:
            raise ValueError("bad magic number")
        _meta_offset, pos = _varint(footer, 0)
        _meta_size, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, pos = _varint(footer, pos)
        for _, handle in _block_entries(self._block(data, index_offset, index_size)):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            for key, value in _block_entries(self._block(data, offset, size)):
                self._add_entry(key, value)

    @staticmethod
    def _block(data: bytes, offset: int, size: int) -> bytes:
        end = offset + size
        if end + _TRAILER_SIZE > len(data) - _FOOTER_SIZE:
            raise ValueError("block beyond end of file")
        compression = data[end]
        if compression == 0:
            return data[offset:end]
        if compression == 1:
            return snappy_decompress(data[offset:end])
        raise ValueError(f"unknown block compression {compression}")

    def _add_entry(self, raw_key: bytes, value: bytes) -> None:
        if not raw_key:
            header = BundleHeaderProto.FromString(value)
            self.num_shards = header.num_shards
            if header.endianness != 0:
                raise ValueError("big-endian bundles are not supported")
            return
        if raw_key[0] == 0:
            # Keys of a partitioned variable's slices are order-encoded and start with
            # a zero byte; the variable itself has its own entry listing the slices.
            return
        proto = BundleEntryProto.FromString(value)
        key = raw_key.decode("utf-8", "replace")
        dims = [int(d.size) for d in proto.shape.dim]
        if any(d < 0 for d in dims) or proto.size < 0 or proto.offset < 0:
            raise ValueError(f"entry {key!r} declares shape {dims}, {proto.size} bytes")
        self.entries[key] = BundleEntry(
            key=key,
            dtype=int(proto.dtype),
            shape=tuple(int(d.size) for d in proto.shape.dim),
            shard_id=int(proto.shard_id),
            offset=int(proto.offset),
            size=int(proto.size),
            sliced=len(proto.slices) > 0,
        )

    def data_path(self, shard_id: int) -> Path:
        """The file holding shard `shard_id`."""
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def missing_shards(self) -> list[Path]:
        """Data files the index refers to that do not exist."""
        shards = {entry.shard_id for entry in self.entries.values()}
        return [self.data_path(s) for s in sorted(shards) if not self.data_path(s).is_file()]

    def _read_bytes(self, entry: BundleEntry) -> bytearray:
        path = self.data_path(entry.shard_id)
        what = f"every data shard the checkpoint index names, beside {self.index_path.name}"
        available = file_size(path, what, limit=2**63)
        if entry.offset + entry.size > available:
            # Checked before allocating: an index can declare any size.
            raise BnauditError(
                f"{shown(path)} is truncated: {entry.key!r} needs {entry.size} bytes at offset "
                f"{entry.offset}, the file has {available}; pass an intact checkpoint"
            )
        buf = bytearray(entry.size)
        try:
            with path.open("rb") as file:
                file.seek(entry.offset)
                got = file.readinto(buf)
        except OSError as exc:
            raise BnauditError(f"cannot read {shown(path)}: {exc.strerror or exc}") from None
        if got != entry.size:
            raise BnauditError(
                f"{shown(path)} is truncated: {entry.key!r} needs {entry.size} bytes at offset "
                f"{entry.offset}, only {got} are there; pass an intact checkpoint"
            )
        return buf

    def read(self, key: str) -> NDArray[Any]:
        """Read one tensor. bfloat16 is widened to float32 (numpy has no bfloat16)."""
        entry = self.entries.get(key)
        if entry is None:
            raise KeyError(key)
        if entry.size > MAX_TENSOR_BYTES:
            raise BnauditError(
                f"{shown(self.index_path)}: {key!r} declares {entry.size:,} bytes; bnaudit reads "
                f"at most {MAX_TENSOR_BYTES // 2**20} MB a tensor (BN parameters and the kernels "
                "of folded layers are far smaller)"
            )
        if entry.sliced:
            raise BnauditError(
                f"{key!r} is a partitioned variable (stored in slices), which bnaudit "
                "does not read; save the checkpoint without a partitioner"
            )
        if entry.dtype == _DT_STRING:
            return np.array(self._read_strings(entry), dtype=object).reshape(entry.shape)
        if entry.dtype not in _NUMERIC:
            raise BnauditError(
                f"{key!r} has dtype {dtype_name(entry.dtype)}, which bnaudit cannot read"
            )
        stored = np.dtype(_NUMERIC[entry.dtype][1])
        count = math.prod(entry.shape)
        if count * stored.itemsize != entry.size:
            raise BnauditError(
                f"{self.index_path}: {key!r} has shape {list(entry.shape)} but {entry.size} "
                "bytes; the checkpoint is corrupt, pass an intact one"
            )
        array = np.frombuffer(self._read_bytes(entry), dtype=stored).reshape(entry.shape)
        if entry.dtype == _DT_BFLOAT16:
            # bfloat16 is the top half of a float32.
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.astype(stored.newbyteorder("="), copy=False)

    def _read_strings(self, entry: BundleEntry) -> list[bytes]:
        # Layout: one varint length per element, a 4-byte crc32c of the lengths, the bytes.
        buf = bytes(self._read_bytes(entry))
        count = math.prod(entry.shape)
        if count > len(buf):  # every element takes at least its length byte
            raise BnauditError(f"string tensor {entry.key!r} is corrupt (shape {entry.shape})")
        lengths = []
        pos = 0
        try:
            for _ in range(count):
                length, pos = _varint(buf, pos)
                lengths.append(length)
        except ValueError:
            raise BnauditError(f"string tensor {entry.key!r} is corrupt") from None
        pos += 4
        if pos + sum(lengths) != len(buf):
            raise BnauditError(f"string tensor {entry.key!r} is corrupt (size mismatch)")
        values = []
        for length in lengths:
            values.append(buf[pos : pos + length])
            pos += length
        return values

    def object_graph(self) -> Any | None:
        """The `TrackableObjectGraph` of an object-based checkpoint, or None for a `Saver` one."""
        entry = self.entries.get(OBJECT_GRAPH_KEY)
        if entry is None or entry.dtype != _DT_STRING:
            return None
        where = f"{shown(self.data_path(entry.shard_id))}"
        if entry.size > MAX_OBJECT_GRAPH_BYTES or math.prod(entry.shape) != 1:
            raise BnauditError(
                f"{where}: its object graph is {entry.size:,} bytes of shape {list(entry.shape)}, "
                "not one serialized graph; pass an intact copy of the checkpoint"
            )
        (serialized,) = self._read_strings(entry)
        try:
            graph = TrackableObjectGraph.FromString(serialized)
        except (DecodeError, RecursionError):
            raise BnauditError(
                f"{where} is damaged: its object graph does not parse; pass an intact copy of "
                "the checkpoint"
            ) from None
        count = len(graph.nodes)
        if count == 0 or any(
            not 0 <= child.node_id < count for node in graph.nodes for child in node.children
        ):
            raise BnauditError(
                f"{where} is damaged: its object graph refers to objects it does not hold; "
                "pass an intact copy of the checkpoint"
            )
        return graph
