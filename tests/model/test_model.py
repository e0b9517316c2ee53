"""`load_model`: dispatch through `FORMATS`, and the message when no format recognises a file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MODELS

import bnaudit.model
from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.formats.signatures import HDF5_MAGIC
from bnaudit.model import FORMATS, load_model
from bnaudit.model.graph import Graph, index_graph
from bnaudit.model.graphdef import GraphDefFormat
from bnaudit.model.sniff import FREEZE_HINT


class _Fake:
    """A format that recognises files starting with `FAKE`, and records what it was given."""

    name = "fake"

    def __init__(self) -> None:
        self.seen: list[tuple[Path, bytes]] = []
        self.loaded: list[Path] = []

    def recognizes(self, path: Path, data: bytes) -> bool:
        self.seen.append((path, data))
        return data.startswith(b"FAKE")

    def load(self, path: Path, data: bytes) -> Graph:
        self.loaded.append(path)
        graph = protos.GraphDef()
        graph.node.add(name="fake", op="Placeholder")
        return index_graph(path, graph)


class _Never:
    name = "never"

    def recognizes(self, path: Path, data: bytes) -> bool:
        return False

    def load(self, path: Path, data: bytes) -> Graph:
        raise AssertionError("a format that does not recognise a file must not load it")


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_graphdef_is_the_only_and_last_format() -> None:
    assert len(FORMATS) == 1
    assert isinstance(FORMATS[-1], GraphDefFormat)


def test_frozen_graph_loads() -> None:
    path = MODELS / "tf1_fused_cond" / "frozen.pb"
    graph = load_model(path)
    assert graph.path == path
    assert "is_training" in graph.top.nodes
    assert graph.top.nodes["is_training"].op == "PlaceholderWithDefault"


def test_a_format_placed_first_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Fake()
    monkeypatch.setattr(bnaudit.model, "FORMATS", (fake, *FORMATS))
    path = _write(tmp_path, "model.fake", b"FAKE model")
    graph = load_model(path)
    assert list(graph.top.nodes) == ["fake"]
    assert fake.seen == [(path, b"FAKE model")]
    assert fake.loaded == [path]


def test_formats_are_asked_in_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Fake()
    monkeypatch.setattr(bnaudit.model, "FORMATS", (fake, *FORMATS))
    graph = protos.GraphDef()
    graph.node.add(name="x", op="Placeholder")
    path = _write(tmp_path, "g.pb", graph.SerializeToString())
    loaded = load_model(path)
    assert len(fake.seen) == 1 and fake.loaded == []
    assert list(loaded.top.nodes) == ["x"]


def test_nothing_recognises_a_plain_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bnaudit.model, "FORMATS", (_Never(),))
    path = _write(tmp_path, "model.bin", b"some bytes")
    with pytest.raises(BnauditError) as caught:
        load_model(path)
    assert str(caught.value) == f"{path} is not a model bnaudit reads; pass a frozen graph"


def test_nothing_recognises_a_file_of_another_kind(tmp_path: Path) -> None:
    path = _write(tmp_path, "model.h5", HDF5_MAGIC + bytes(64))
    with pytest.raises(BnauditError) as caught:
        load_model(path)
    assert str(caught.value) == (
        f"{path} is an HDF5 (Keras weights) file, not a graph: {FREEZE_HINT}"
    )


def test_unreadable_paths_fail_before_any_format_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _Fake()
    monkeypatch.setattr(bnaudit.model, "FORMATS", (fake,))
    with pytest.raises(BnauditError, match="no such file"):
        load_model(tmp_path / "missing.pb")
    with pytest.raises(BnauditError, match="is empty"):
        load_model(_write(tmp_path, "empty.pb", b""))
    assert fake.seen == []
