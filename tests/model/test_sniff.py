"""`describe_other` and `read_model_bytes`: files that are not a frozen graph, named by content."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODELS

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.formats.signatures import HDF5_MAGIC, LEVELDB_MAGIC, ZIP_MAGIC
from bnaudit.model.sniff import (
    FREEZE_HINT,
    container_kind,
    describe_other,
    read_model_bytes,
)


def _graph_def() -> protos.GraphDef:
    graph = protos.GraphDef()
    graph.node.add(name="x", op="Placeholder")
    graph.node.add(name="y", op="Identity", input=["x"])
    return graph


def _meta_graph() -> bytes:
    meta = protos.MetaGraphDef()
    meta.graph_def.CopyFrom(_graph_def())
    return meta.SerializeToString()


def _saved_model(with_nodes: bool = True) -> bytes:
    saved = protos.SavedModel(saved_model_schema_version=1)
    meta = saved.meta_graphs.add()
    if with_nodes:
        meta.graph_def.CopyFrom(_graph_def())
    return saved.SerializeToString()


def test_checkpoint_index() -> None:
    path = Path("ckpt/model.ckpt-20.index")
    message = describe_other(path, bytes(40) + LEVELDB_MAGIC)
    assert message == (
        f"{path} is a checkpoint index, not a graph: pass the frozen .pb as the graph "
        "(and the checkpoint prefix to `bnaudit compare`)"
    )


def test_real_checkpoint_index_under_any_name() -> None:
    data = (MODELS / "broken_ckpt_index" / "model.ckpt-20.index").read_bytes()
    message = describe_other(Path("model.pb"), data)
    assert message is not None and message.startswith("model.pb is a checkpoint index")


def test_leveldb_magic_on_a_file_too_short_for_a_table_is_not_an_index() -> None:
    assert describe_other(Path("x.pb"), bytes(39) + LEVELDB_MAGIC) is None


def test_checkpoint_data_shard_by_name() -> None:
    path = Path("ckpt/model.ckpt-20.data-00000-of-00001")
    assert describe_other(path, b"\x01\x02\x03") == (
        f"{path} is a checkpoint data file, not a graph; pass the frozen .pb"
    )


def test_hdf5() -> None:
    message = describe_other(Path("model.weights.h5"), HDF5_MAGIC + bytes(100))
    assert (
        message == f"model.weights.h5 is an HDF5 (Keras weights) file, not a graph: {FREEZE_HINT}"
    )


def test_zip() -> None:
    message = describe_other(Path("model.keras"), ZIP_MAGIC + bytes(100))
    assert message == (
        f"model.keras is a zip archive (a .keras model?), not a graph: {FREEZE_HINT}"
    )


def test_saved_model_fixture() -> None:
    path = MODELS / "broken_savedmodel" / "saved_model.pb"
    assert describe_other(path, path.read_bytes()) == (
        f"{path} is a SavedModel, not a frozen graph: {FREEZE_HINT}"
    )


def test_saved_model_under_another_name_is_recognised_by_its_first_byte() -> None:
    data = _saved_model()
    assert data[:1] == b"\x08"
    assert describe_other(Path("model.pb"), data) == (
        f"model.pb is a SavedModel, not a frozen graph: {FREEZE_HINT}"
    )


def test_meta_graph_named_meta() -> None:
    path = Path("model.ckpt-20.meta")
    assert describe_other(path, _meta_graph()) == (
        f"{path} is a MetaGraphDef (.meta), not a frozen graph: {FREEZE_HINT}"
    )


def test_container_without_a_graph_is_not_named() -> None:
    assert container_kind(_saved_model(with_nodes=False)) is None
    assert container_kind(protos.MetaGraphDef().SerializeToString()) is None
    assert describe_other(Path("saved_model.pb"), _saved_model(with_nodes=False)) is None


def test_frozen_graph_is_not_something_else() -> None:
    data = _graph_def().SerializeToString()
    assert describe_other(Path("frozen.pb"), data) is None
    assert describe_other(Path("frozen.pbtxt"), str(_graph_def()).encode()) is None


def test_frozen_graph_fixture_is_not_something_else() -> None:
    path = MODELS / "tf1_fused_cond" / "frozen.pb"
    assert describe_other(path, path.read_bytes()) is None


# read_model_bytes.


def test_reads_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "g.pb"
    path.write_bytes(b"\x0a\x01x")
    assert read_model_bytes(path) == b"\x0a\x01x"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pb"
    with pytest.raises(BnauditError) as caught:
        read_model_bytes(path)
    assert str(caught.value) == f"{path}: no such file; pass a frozen graph (.pb or .pbtxt)"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(BnauditError) as caught:
        read_model_bytes(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path} is a directory; pass a frozen graph file (.pb or .pbtxt)"
    )


def test_saved_model_directory(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(_saved_model())
    with pytest.raises(BnauditError) as caught:
        read_model_bytes(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path} is a SavedModel directory, not a frozen graph: {FREEZE_HINT}"
    )


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pb"
    path.write_bytes(b"")
    with pytest.raises(BnauditError) as caught:
        read_model_bytes(path)
    assert str(caught.value) == f"{path} is empty; pass a frozen graph (.pb or .pbtxt)"
