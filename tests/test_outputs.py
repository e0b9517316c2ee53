"""`refuse_overwrite`: bnaudit never writes over one of its inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bnaudit.errors import ExitCode, UsageError
from bnaudit.outputs import refuse_overwrite


def _refused(written: Path, *inputs: Path) -> str:
    with pytest.raises(UsageError) as caught:
        refuse_overwrite("--save-inputs", written, list(inputs))
    assert caught.value.exit_code == ExitCode.USAGE
    return str(caught.value)


def _checkpoint(folder: Path, prefix: str = "model.ckpt-20") -> Path:
    folder.mkdir(exist_ok=True)
    for suffix in (".index", ".meta", ".data-00000-of-00001"):
        (folder / (prefix + suffix)).write_bytes(b"x")
    return folder / prefix


def test_nothing_written_is_always_allowed(tmp_path: Path) -> None:
    refuse_overwrite("--output", None, [tmp_path / "frozen.pb"])


def test_the_input_itself(tmp_path: Path) -> None:
    graph = tmp_path / "frozen.pb"
    graph.write_bytes(b"g")
    message = _refused(graph, tmp_path / "ckpt", graph)
    assert message == (
        f"--save-inputs {graph} would write over the input {graph}; bnaudit never writes to "
        "its inputs"
    )
    assert graph.read_bytes() == b"g"


def test_the_input_by_another_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = tmp_path / "frozen.pb"
    graph.write_bytes(b"g")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert "would write over the input" in _refused(Path("../frozen.pb"), graph)


def test_a_symlink_to_the_input(tmp_path: Path) -> None:
    graph = tmp_path / "frozen.pb"
    graph.write_bytes(b"g")
    link = tmp_path / "link.pb"
    link.symlink_to(graph)
    _refused(link, graph)


def test_a_hard_link_to_the_input_is_refused(tmp_path: Path) -> None:
    """Another name of the same file (same device and inode): writing it would truncate the
    input through the link."""
    graph = tmp_path / "inputs.npz"
    graph.write_bytes(b"g")
    alias = tmp_path / "alias.npz"
    os.link(graph, alias)
    assert alias.samefile(graph)
    with pytest.raises(UsageError, match="would write over the input"):
        refuse_overwrite("--save-inputs", alias, [graph])


def test_inside_an_input_directory(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    _checkpoint(folder)
    _refused(folder / "inputs.npz", folder)
    _refused(folder / "new" / "deeper" / "inputs.npz", folder)
    _refused(folder / "model.ckpt-20.index", folder)


@pytest.mark.parametrize(
    "name", ["model.ckpt-20.index", "model.ckpt-20.meta", "model.ckpt-20.data-00000-of-00001"]
)
def test_a_saver_prefix_stands_for_its_files(tmp_path: Path, name: str) -> None:
    prefix = _checkpoint(tmp_path / "ckpt")
    _refused(prefix.parent / name, prefix)


@pytest.mark.parametrize("given", [".index", ".data-00000-of-00001", ".meta"])
def test_one_checkpoint_file_stands_for_all_of_them(tmp_path: Path, given: str) -> None:
    prefix = _checkpoint(tmp_path / "ckpt")
    source = prefix.with_name(prefix.name + given)
    _refused(prefix.with_name(prefix.name + ".index"), source)
    _refused(prefix.with_name(prefix.name + ".data-00000-of-00001"), source)


def test_a_saver_prefix_does_not_claim_other_steps(tmp_path: Path) -> None:
    prefix = _checkpoint(tmp_path / "ckpt")
    refuse_overwrite("--save-inputs", prefix.with_name("model.ckpt-200.npz"), [prefix])
    refuse_overwrite("--save-inputs", prefix.with_name("model.ckpt-2.npz"), [prefix])
    refuse_overwrite("--save-inputs", tmp_path / "model.ckpt-20.npz", [prefix])


def test_saved_model_pb_stands_for_its_directory(tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    (folder / "variables").mkdir(parents=True)
    saved_model = folder / "saved_model.pb"
    saved_model.write_bytes(b"s")
    _refused(folder / "variables" / "variables.index", saved_model)
    _refused(folder / "report.json", saved_model)
    _refused(folder, saved_model)


def test_unrelated_paths_are_allowed(tmp_path: Path) -> None:
    prefix = _checkpoint(tmp_path / "ckpt")
    graph = tmp_path / "frozen.pb"
    graph.write_bytes(b"g")
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"s")
    inputs = [prefix, graph, folder / "saved_model.pb"]
    for written in (
        tmp_path / "out" / "inputs.npz",
        tmp_path / "report.json",
        tmp_path / "frozen.npz",
        tmp_path / "exported_inputs.npz",
    ):
        refuse_overwrite("--save-inputs", written, inputs)
