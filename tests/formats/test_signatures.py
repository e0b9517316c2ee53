"""Magic numbers and checkpoint file names: `head`, `tail`, `is_leveldb_table`, the patterns."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODELS

from bnaudit.formats.signatures import (
    CHECKPOINT_FILE,
    DATA_SHARD,
    LEVELDB_MAGIC,
    head,
    is_leveldb_table,
    tail,
)


def _write(tmp_path: Path, data: bytes, name: str = "f.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_head(tmp_path: Path) -> None:
    path = _write(tmp_path, bytes(range(40)))
    assert head(path) == bytes(range(16))
    assert head(path, 4) == b"\x00\x01\x02\x03"


def test_head_of_a_short_file_is_all_of_it(tmp_path: Path) -> None:
    assert head(_write(tmp_path, b"abc")) == b"abc"
    assert head(_write(tmp_path, b"", "empty")) == b""


def test_tail(tmp_path: Path) -> None:
    path = _write(tmp_path, bytes(range(40)))
    assert tail(path) == bytes(range(32, 40))
    assert tail(path, 3) == bytes([37, 38, 39])


def test_tail_of_a_short_file_is_all_of_it(tmp_path: Path) -> None:
    assert tail(_write(tmp_path, b"abc")) == b"abc"
    assert tail(_write(tmp_path, b"", "empty")) == b""


def test_leveldb_table_needs_48_bytes_ending_in_the_magic(tmp_path: Path) -> None:
    assert is_leveldb_table(_write(tmp_path, bytes(40) + LEVELDB_MAGIC, "ok.index"))
    assert not is_leveldb_table(_write(tmp_path, bytes(39) + LEVELDB_MAGIC, "short.index"))
    assert not is_leveldb_table(_write(tmp_path, bytes(48), "zeros.index"))
    assert not is_leveldb_table(_write(tmp_path, LEVELDB_MAGIC + bytes(40), "head.index"))
    assert not is_leveldb_table(_write(tmp_path, b"", "empty.index"))


def test_real_checkpoint_index_is_a_leveldb_table() -> None:
    assert is_leveldb_table(MODELS / "broken_ckpt_index" / "model.ckpt-20.index")
    assert not is_leveldb_table(MODELS / "tf1_fused_cond" / "frozen.pb")


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("model.ckpt-20.data-00000-of-00001", "model.ckpt-20"),
        ("ckpt.data-00003-of-00004", "ckpt"),
        ("a.b.data-12345-of-99999", "a.b"),
    ],
)
def test_data_shard_names(name: str, prefix: str) -> None:
    match = DATA_SHARD.match(name)
    assert match is not None
    assert match["prefix"] == prefix


@pytest.mark.parametrize(
    "name",
    [
        "model.ckpt-20.data-0-of-1",
        "model.ckpt-20.data-00000-of-00001.tmp",
        ".data-00000-of-00001",
        "model.ckpt-20.index",
        "model.data-00000-of-000001",
    ],
)
def test_not_data_shard_names(name: str) -> None:
    assert DATA_SHARD.match(name) is None


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("model.ckpt-20.index", "model.ckpt-20"),
        ("model.ckpt-20.meta", "model.ckpt-20"),
        ("model.ckpt-20.data-00000-of-00002", "model.ckpt-20"),
        ("model.ckpt-20", "model.ckpt-20"),
        ("frozen.pb", "frozen.pb"),
        ("model.index.pb", "model.index.pb"),
        ("x.data-0-of-1", "x.data-0-of-1"),
    ],
)
def test_checkpoint_file_suffix(name: str, stem: str) -> None:
    assert CHECKPOINT_FILE.sub("", name) == stem
