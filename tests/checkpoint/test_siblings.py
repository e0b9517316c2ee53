"""The other checkpoints a graph may have been frozen from: beside the given one, or searched."""

from __future__ import annotations

from pathlib import Path

from bnaudit.audit.frozenfrom import frozen_from
from bnaudit.checkpoint.siblings import MAX_CANDIDATES, beside, search


def _bundle(prefix: Path) -> Path:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.index").write_bytes(b"x")
    Path(f"{prefix}.data-00000-of-00001").write_bytes(b"x")
    return prefix


def test_beside_lists_other_prefixes_of_the_same_directory(tmp_path: Path) -> None:
    given = _bundle(tmp_path / "model.ckpt-20")
    other = _bundle(tmp_path / "model.ckpt-10")
    Path(f"{tmp_path}/orphan.index").write_bytes(b"x")  # no shard: not a checkpoint
    (tmp_path / "model.weights.h5").write_bytes(b"x")  # another kind
    assert beside(given) == [other]


def test_beside_a_keras_file_lists_files_of_its_kind(tmp_path: Path) -> None:
    given = tmp_path / "b.weights.h5"
    for name in ("a.weights.h5", "b.weights.h5", "c.keras"):
        (tmp_path / name).write_bytes(b"x")
    assert beside(given) == [tmp_path / "a.weights.h5"]


def test_search_walks_below_shallowest_first_and_is_bounded(tmp_path: Path) -> None:
    deep = _bundle(tmp_path / "a" / "b" / "old.ckpt-1")
    near = _bundle(tmp_path / "z" / "model.ckpt-5")
    (tmp_path / "x.keras").write_bytes(b"x")
    found = search(tmp_path, exclude=near)
    assert found == [tmp_path / "x.keras", deep]
    many = tmp_path / "many"
    for i in range(MAX_CANDIDATES + 10):
        _bundle(many / f"m.ckpt-{i:03d}")
    assert len(search(many, exclude=near)) == MAX_CANDIDATES


def test_frozen_from_names_the_matching_candidates_and_skips_damaged_ones(tmp_path: Path) -> None:
    given = _bundle(tmp_path / "model.ckpt-20")
    damaged = _bundle(tmp_path / "model.ckpt-15")
    match = _bundle(tmp_path / "model.ckpt-10")

    def matches(candidate: Path) -> bool:
        if candidate == damaged:
            raise ValueError("damaged beyond what the readers check")
        return candidate == match

    looked = frozen_from(given, None, matches)
    assert looked.found == (match,) and set(looked.tried) == {damaged, match}
    assert looked.unreadable == ((damaged, "ValueError"),)  # said in a note: it may be the one
