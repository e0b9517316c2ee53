"""Reading graph files: what is not a frozen GraphDef gets a one-line error that says so."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.model import load_model


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _small_graph() -> bytes:
    graph = protos.GraphDef()
    graph.node.add(name="x", op="Placeholder")
    graph.node.add(name="y", op="Identity", input=["x"])
    return graph.SerializeToString()


@pytest.mark.parametrize(
    ("name", "data", "phrase"),
    [
        ("empty.pb", b"", "empty"),
        ("random.pb", np.random.default_rng(0).bytes(4096), "not a GraphDef"),
        ("weights.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "HDF5"),
        ("model.ckpt.data-00000-of-00001", b"\x00" * 16, "checkpoint data file"),
        ("model.ckpt.index", bytes(40) + bytes.fromhex("57fb808b247547db"), "checkpoint index"),
    ],
)
def test_non_graph_files_are_named(tmp_path: Path, name: str, data: bytes, phrase: str) -> None:
    with pytest.raises(BnauditError, match=phrase):
        load_model(_write(tmp_path, name, data))


def test_zip_archive_is_named(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(BnauditError, match="zip archive"):
        load_model(path)


def test_saved_model_file_and_directory(tmp_path: Path) -> None:
    saved = protos.SavedModel(saved_model_schema_version=1)
    saved.meta_graphs.add().graph_def.ParseFromString(_small_graph())
    path = _write(tmp_path, "saved_model.pb", saved.SerializeToString())
    with pytest.raises(BnauditError, match="SavedModel"):
        load_model(path)
    with pytest.raises(BnauditError, match="SavedModel directory"):
        load_model(tmp_path)


def test_meta_graph_is_named(tmp_path: Path) -> None:
    meta = protos.MetaGraphDef()
    meta.graph_def.ParseFromString(_small_graph())
    with pytest.raises(BnauditError, match="MetaGraphDef"):
        load_model(_write(tmp_path, "model.ckpt.meta", meta.SerializeToString()))


def test_missing_file_and_plain_directory(tmp_path: Path) -> None:
    with pytest.raises(BnauditError, match="no such file"):
        load_model(tmp_path / "nope.pb")
    with pytest.raises(BnauditError, match="is a directory"):
        load_model(tmp_path)


def test_dangling_input_reads_as_truncated(tmp_path: Path) -> None:
    graph = protos.GraphDef()
    graph.node.add(name="y", op="Identity", input=["x"])
    with pytest.raises(BnauditError, match="truncated"):
        load_model(_write(tmp_path, "cut.pb", graph.SerializeToString()))


def test_truncated_bytes(tmp_path: Path) -> None:
    data = _small_graph()
    with pytest.raises(BnauditError):
        load_model(_write(tmp_path, "half.pb", data[: len(data) // 2 + 1]))


def test_text_and_binary_read_alike(tmp_path: Path) -> None:
    from google.protobuf import text_format

    binary = protos.GraphDef.FromString(_small_graph())
    text_path = _write(tmp_path, "g.pbtxt", text_format.MessageToString(binary).encode())
    assert [n.name for n in load_model(text_path).graph_def.node] == ["x", "y"]
    assert list(load_model(_write(tmp_path, "g.pb", _small_graph())).top.nodes) == ["x", "y"]


def test_topological_order_ignores_file_order(tmp_path: Path) -> None:
    graph = protos.GraphDef()
    graph.node.add(name="b", op="Identity", input=["a"])
    graph.node.add(name="c", op="Identity", input=["b", "^a"])
    graph.node.add(name="a", op="Placeholder")
    order = load_model(_write(tmp_path, "g.pb", graph.SerializeToString())).order
    assert order["a"] < order["b"] < order["c"]
