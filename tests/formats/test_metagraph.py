"""The `.meta` beside a checkpoint: finding it (`metas_beside`) and reading it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODELS

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.formats.metagraph import metas_beside, read_meta_graph_def


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"")


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_own_meta_first_then_latest_step_first(tmp_path: Path) -> None:
    _touch(tmp_path, "model.ckpt-2.meta", "model.ckpt-9.meta", "model.ckpt-10.meta")
    _touch(tmp_path, "model.ckpt-9.index", "model.ckpt-10.index")
    assert _names(metas_beside(tmp_path / "model.ckpt-9")) == [
        "model.ckpt-9.meta",
        "model.ckpt-10.meta",
        "model.ckpt-2.meta",
    ]


def test_without_its_own_meta_the_latest_step_comes_first(tmp_path: Path) -> None:
    _touch(tmp_path, "model.ckpt-9.meta", "model.ckpt-10.meta", "model.ckpt-100.meta")
    assert _names(metas_beside(tmp_path / "model.ckpt-30")) == [
        "model.ckpt-100.meta",
        "model.ckpt-10.meta",
        "model.ckpt-9.meta",
    ]


def test_only_meta_files_of_the_same_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _touch(tmp_path, "model.ckpt-1.index", "notes.txt")
    _touch(tmp_path / "sub", "model.ckpt-5.meta")
    assert metas_beside(tmp_path / "model.ckpt-1") == []
    assert metas_beside(tmp_path / "sub" / "model.ckpt-1") == [
        tmp_path / "sub" / "model.ckpt-5.meta"
    ]


def test_fixture_meta() -> None:
    prefix = MODELS / "tf1_wrong_ckpt" / "ckpt" / "model.ckpt-10"
    # Only step 20 wrote a .meta (write_meta_graph=False later on).
    assert metas_beside(prefix) == [prefix.with_name("model.ckpt-20.meta")]


def test_read_meta_graph_def(tmp_path: Path) -> None:
    meta = protos.MetaGraphDef()
    meta.graph_def.node.add(name="x", op="Placeholder")
    meta.saver_def.restore_op_name = "save/restore_all"
    path = tmp_path / "model.ckpt-1.meta"
    path.write_bytes(meta.SerializeToString())
    data, parsed = read_meta_graph_def(path)
    assert data == meta.SerializeToString()
    assert [n.name for n in parsed.graph_def.node] == ["x"]
    assert parsed.saver_def.restore_op_name == "save/restore_all"


def test_read_missing_meta(tmp_path: Path) -> None:
    path = tmp_path / "gone.meta"
    with pytest.raises(BnauditError) as caught:
        read_meta_graph_def(path)
    assert str(caught.value) == f"{path}: no such file; pass a MetaGraphDef (.meta)"


def test_read_a_directory(tmp_path: Path) -> None:
    with pytest.raises(BnauditError) as caught:
        read_meta_graph_def(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path} is a directory")


def test_read_a_file_that_is_not_a_meta_graph(tmp_path: Path) -> None:
    path = tmp_path / "bad.meta"
    path.write_bytes(b"\x12\x05ab")  # graph_def claims 5 bytes, 2 follow
    with pytest.raises(BnauditError) as caught:
        read_meta_graph_def(path)
    assert str(caught.value) == "bad.meta is not a MetaGraphDef"
