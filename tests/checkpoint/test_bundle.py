"""The tensor-bundle reader against `tf.train.load_checkpoint`, tensor for tensor."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ckpt_factory import build

from bnaudit.checkpoint.bundle import OBJECT_GRAPH_KEY, Bundle, dtype_name, snappy_decompress
from bnaudit.errors import BnauditError
from bnaudit.formats.protos import BundleEntryProto, BundleHeaderProto


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build(tmp_path_factory.getbasetemp() / "tf_checkpoints")


def _same(ours: Any, theirs: Any, tf_dtype: str) -> bool:
    if tf_dtype == "string":
        return bool(np.asarray(ours).tolist() == np.asarray(theirs, dtype=object).tolist())
    theirs = np.asarray(theirs)
    return (
        ours.dtype == theirs.dtype and ours.shape == theirs.shape and np.array_equal(ours, theirs)
    )


@pytest.mark.parametrize(
    "name", ["tf1", "trainable", "sharded", "many", "tf2", "tf2_model", "saved_model", "module"]
)
def test_every_tensor_matches_tensorflow(built: dict[str, Any], name: str) -> None:
    bundle = Bundle(built["prefixes"][name])
    reference = built["tensors"][name]
    assert set(bundle.entries) == set(reference)
    for key, (tf_dtype, value) in reference.items():
        assert dtype_name(bundle.entries[key].dtype) == tf_dtype
        if bundle.entries[key].sliced:
            continue  # partitioned: listed, not read (test_sliced_variable)
        assert _same(bundle.read(key), value, tf_dtype), key


def test_dtypes_and_shapes(built: dict[str, Any]) -> None:
    bundle = Bundle(built["prefixes"]["tf1"])
    assert bundle.read("model/half").dtype == np.float16
    brain = bundle.read("model/brain")  # bfloat16 is widened
    assert brain.dtype == np.float32 and brain.shape == (5,)
    assert bundle.read("model/flag").tolist() == [True, False, True]
    assert bundle.read("model/empty").shape == (0, 3)
    assert bundle.read("model/text").tolist() == [b"hello", b"", b"world!"]
    assert bundle.read("global_step").shape == ()
    entry = bundle.entries["model/conv1/kernel"]
    assert (entry.shape, entry.shard_id, entry.size) == ((3, 3, 2, 4), 0, 3 * 3 * 2 * 4 * 4)


def test_sharded_checkpoint_reads_both_shards(built: dict[str, Any]) -> None:
    bundle = Bundle(built["prefixes"]["sharded"])
    assert bundle.num_shards == 2
    assert {e.shard_id for e in bundle.entries.values()} == {0, 1}


def test_index_with_several_blocks(built: dict[str, Any]) -> None:
    bundle = Bundle(built["prefixes"]["many"])
    assert len(bundle.entries) == 5001
    assert Path(f"{built['prefixes']['many']}.index").stat().st_size > 300_000


def test_sliced_variable(built: dict[str, Any]) -> None:
    bundle = Bundle(built["prefixes"]["many"])
    assert bundle.entries["part"].sliced and bundle.entries["part"].shape == (4,)
    with pytest.raises(BnauditError, match=r"partitioned variable"):
        bundle.read("part")


def test_object_graph(built: dict[str, Any]) -> None:
    graph = Bundle(built["prefixes"]["tf2"]).object_graph()
    assert graph is not None
    keys = {a.checkpoint_key for n in graph.nodes for a in n.attributes}
    assert keys == set(built["tensors"]["tf2"]) - {OBJECT_GRAPH_KEY}
    assert Bundle(built["prefixes"]["tf1"]).object_graph() is None


def test_unknown_key(built: dict[str, Any]) -> None:
    with pytest.raises(KeyError):
        Bundle(built["prefixes"]["tf1"]).read("nope")


def _copy(prefix: str, dest: Path) -> Path:
    source = Path(prefix)
    for file in source.parent.glob(f"{source.name}.*"):
        shutil.copy(file, dest / file.name)
    return dest / source.name


def test_truncated_data_file(built: dict[str, Any], tmp_path: Path) -> None:
    prefix = _copy(built["prefixes"]["tf1"], tmp_path)
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:40])
    bundle = Bundle(prefix)
    with pytest.raises(BnauditError, match=r"truncated"):
        bundle.read("model/conv1/kernel")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:30], "shorter than a table footer"),
        (lambda b: b[:-1] + b"\x00", "bad magic"),
        (lambda b: b[:10] + bytes(len(b) - 58) + b[-48:], "not a valid checkpoint index"),
        (lambda b: b"", "shorter than a table footer"),
    ],
)
def test_corrupt_index(built: dict[str, Any], tmp_path: Path, damage: Any, message: str) -> None:
    prefix = _copy(built["prefixes"]["tf1"], tmp_path)
    index = Path(f"{prefix}.index")
    index.write_bytes(damage(index.read_bytes()))
    with pytest.raises(BnauditError, match=message):
        Bundle(prefix)


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(BnauditError, match=r"PREFIX\.index must exist"):
        Bundle(tmp_path / "model.ckpt")


# A hand-built table: the format allows snappy-compressed blocks, which TensorFlow never
# writes, so the only way to test them is to write one.


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)  # one restart point at 0


def _snappy_literals(data: bytes) -> bytes:
    """Snappy with literals only: valid, if not compressed."""
    return (
        _varint(len(data))
        + bytes([(len(data) - 1) << 2 if len(data) <= 60 else 60 << 2])
        + (b"" if len(data) <= 60 else bytes([len(data) - 1]))
        + data
    )


def _table(entries: list[tuple[bytes, bytes]], compression: int) -> bytes:
    raw = _block(entries)
    stored = _snappy_literals(raw) if compression == 1 else raw
    out = stored + bytes([compression]) + b"\0\0\0\0"
    meta_offset = len(out)
    meta = _block([])
    out += meta + b"\0\0\0\0\0"
    index_offset = len(out)
    index = _block([(entries[-1][0], _varint(0) + _varint(len(stored)))])
    out += index + b"\0\0\0\0\0"
    handles = (
        _varint(meta_offset) + _varint(len(meta)) + _varint(index_offset) + _varint(len(index))
    )
    footer = handles + bytes(40 - len(handles)) + struct.pack("<Q", 0xDB4775248B80FB57)
    return out + footer


def _entries() -> list[tuple[bytes, bytes]]:
    header = BundleHeaderProto(num_shards=1).SerializeToString()
    entry = BundleEntryProto(dtype=1, offset=0, size=8)
    entry.shape.dim.add(size=2)
    return [(b"", header), (b"w", entry.SerializeToString())]


@pytest.mark.parametrize("compression", [0, 1])
def test_hand_built_table(tmp_path: Path, compression: int) -> None:
    (tmp_path / "t.index").write_bytes(_table(_entries(), compression))
    (tmp_path / "t.data-00000-of-00001").write_bytes(np.array([1.5, -2.0], "<f4").tobytes())
    assert Bundle(tmp_path / "t").read("w").tolist() == [1.5, -2.0]


def test_unknown_compression(tmp_path: Path) -> None:
    (tmp_path / "t.index").write_bytes(_table(_entries(), 2))
    with pytest.raises(BnauditError, match=r"unknown block compression 2"):
        Bundle(tmp_path / "t")


def test_snappy_copies() -> None:
    # "abcd" literal, then a 1-byte-offset copy of 8 overlapping bytes, a 2-byte-offset copy
    # of 3, and a literal "!".
    stream = (
        _varint(16)
        + bytes([3 << 2]) + b"abcd"
        + bytes([1 | ((8 - 4) << 2), 4])
        + bytes([2 | ((3 - 1) << 2)]) + struct.pack("<H", 12)
        + bytes([0]) + b"!"
    )  # fmt: skip
    assert snappy_decompress(stream) == b"abcdabcdabcdabcd"[:12] + b"abc" + b"!"
    with pytest.raises(ValueError):
        snappy_decompress(_varint(4) + bytes([1, 9]))
