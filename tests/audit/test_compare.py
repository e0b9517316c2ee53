"""compare --no-run: pairing, bad inputs, --map, and inputs left untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
from click.testing import CliRunner
from conftest import MODELS

from bnaudit.cli import main
from bnaudit.formats import protos

TF1 = MODELS / "tf1_fused_cond"
KERAS = MODELS / "keras3_bn"


def _compare(runner: CliRunner, *args: str) -> tuple[int, dict | None, str]:  # type: ignore[type-arg]
    result = runner.invoke(main, ["compare", *args, "--no-run", "--format", "json"])
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, data, result.stderr


def test_report_contract(runner: CliRunner) -> None:
    code, report, _ = _compare(runner, str(TF1 / "ckpt"), str(TF1 / "frozen.pb"))
    assert code == 0 and report is not None
    assert set(report) >= {
        "schema_version", "command", "passed", "checkpoint", "graph", "layers", "findings",
        "first_divergent_layer",
    }  # fmt: skip
    layer = report["layers"][0]
    assert layer["match"] == {"method": "exact", "checkpoint_scope": "model/bn1"}
    assert set(layer["stats"]) == {"moving_mean", "moving_variance", "gamma", "beta"}
    assert layer["stats"]["moving_mean"] == {"max_abs_diff": 0.0, "max_rel_diff": 0.0}


def test_keras_layers_pair_by_normalized_scope(runner: CliRunner) -> None:
    for checkpoint in ("ckpt/ckpt", "model.weights.h5", "model.keras"):
        code, report, _ = _compare(runner, str(KERAS / checkpoint), str(KERAS / "frozen.pb"))
        assert code == 0 and report is not None
        assert [(x["scope"], x["match"]["checkpoint_scope"]) for x in report["layers"]] == [
            ("functional_1/bn1_1", "bn1"),
            ("functional_1/bn2_1", "bn2"),
        ]


def test_map_rules_pair_names_the_user_gives(runner: CliRunner) -> None:
    """Swapping the two layers' names pairs each with the other's variables: shapes differ."""
    args = [str(KERAS / "model.keras"), str(KERAS / "frozen.pb"), "--map", "bn1=bnX"]
    args += ["--map", "bn2=bn1", "--map", "bnX=bn2"]
    code, report, _ = _compare(runner, *args)
    assert report is not None
    assert [x["match"]["method"] for x in report["layers"]] == ["map", "map"]
    assert [x["match"]["checkpoint_scope"] for x in report["layers"]] == ["bn2", "bn1"]
    assert code == 1
    assert all(x["findings"][0]["code"] == "shape-mismatch" for x in report["layers"])


def test_malformed_map_is_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["compare", str(TF1 / "ckpt"), str(TF1 / "frozen.pb"), "--map", "x"]
    )
    assert result.exit_code == 2


def test_stat_tolerance_can_accept_a_near_checkpoint(runner: CliRunner) -> None:
    wrong = MODELS / "tf1_wrong_ckpt"
    args = [str(wrong / "ckpt"), str(wrong / "frozen.pb")]
    assert _compare(runner, *args)[0] == 1
    assert _compare(runner, *args, "--stat-atol", "10")[0] == 0


def test_missing_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    code, report, stderr = _compare(runner, str(tmp_path / "nope"), str(TF1 / "frozen.pb"))
    assert code == 3 and report is None
    assert len(stderr.strip().splitlines()) == 1


def test_corrupt_checkpoint_index(runner: CliRunner, tmp_path: Path) -> None:
    shutil.copytree(TF1 / "ckpt", tmp_path / "ckpt")
    index = tmp_path / "ckpt" / "model.ckpt-20.index"
    index.write_bytes(index.read_bytes()[:-20])
    code, _, stderr = _compare(runner, str(tmp_path / "ckpt"), str(TF1 / "frozen.pb"))
    assert code == 3
    assert "bnaudit: error:" in stderr and len(stderr.strip().splitlines()) <= 2


def test_checkpoint_without_bn(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "dense.weights.h5"
    with h5py.File(path, "w") as h5:
        group = h5.create_group("layers/dense/vars")
        group.create_dataset("0", data=np.ones((3, 2), np.float32))
        group.create_dataset("1", data=np.zeros((2,), np.float32))
    code, _, stderr = _compare(runner, str(path), str(TF1 / "frozen.pb"))
    assert code == 3
    assert "no BN variables" in stderr


def test_graph_without_bn(runner: CliRunner, tmp_path: Path) -> None:
    graph = protos.GraphDef()
    graph.node.add(name="x", op="Placeholder")
    graph.node.add(name="y", op="Identity", input=["x"])
    path = tmp_path / "plain.pb"
    path.write_bytes(graph.SerializeToString())
    code, _, stderr = _compare(runner, str(TF1 / "ckpt"), str(path))
    assert code == 3
    assert "no BN layer" in stderr


def test_other_models_checkpoint_is_unmatched(runner: CliRunner) -> None:
    """The 2-D model's checkpoint has one BN layer; the conv model's graph has two."""
    other = MODELS / "tf1_nonfused_2d"
    code, report, _ = _compare(runner, str(other / "ckpt"), str(TF1 / "frozen.pb"))
    assert code == 1 and report is not None
    codes = {f["code"] for x in report["layers"] for f in x["findings"]}
    codes |= {f["code"] for f in report["findings"]}
    assert codes & {"unmatched", "stats-mismatch", "missing-in-graph"}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_inputs_are_never_modified(runner: CliRunner, tmp_path: Path) -> None:
    for source in (TF1, KERAS):
        copy = tmp_path / source.name
        shutil.copytree(source, copy)
        before = _digest(copy)
        checkpoint = copy / ("ckpt" if source is TF1 else "model.keras")
        _compare(runner, str(checkpoint), str(copy / "frozen.pb"))
        runner.invoke(main, ["list-bn", str(copy / "frozen.pb")])
        assert _digest(copy) == before


def test_swapped_arguments_are_named(runner: CliRunner) -> None:
    code, _, stderr = _compare(runner, str(TF1 / "frozen.pb"), str(TF1 / "ckpt"))
    assert code == 3
    assert "look swapped" in stderr and stderr.count("\n") == 1


def test_reports_never_land_on_a_checkpoint(runner: CliRunner, tmp_path: Path) -> None:
    shutil.copytree(TF1 / "ckpt", tmp_path / "ckpt")
    before = _digest(tmp_path / "ckpt")
    graph = str(TF1 / "frozen.pb")
    for target in ("ckpt/checkpoint", "ckpt/new-report.json", "ckpt/model.ckpt-20.index"):
        for option in ("--output", "--save-inputs"):
            args = ["compare", str(tmp_path / "ckpt"), graph, option, str(tmp_path / target)]
            result = runner.invoke(main, args)
            assert result.exit_code == 2, (target, option)
            assert "never writes to its inputs" in result.stderr
    prefix = tmp_path / "ckpt" / "model.ckpt-20"
    result = runner.invoke(main, ["compare", str(prefix), graph, "-o", f"{prefix}.index"])
    assert result.exit_code == 2
    data = f"{prefix}.data-00000-of-00001"
    result = runner.invoke(main, ["compare", f"{prefix}.index", graph, "-o", data])
    assert result.exit_code == 2
    assert _digest(tmp_path / "ckpt") == before


def test_another_architectures_layer_is_a_shape_mismatch(runner: CliRunner) -> None:
    """The 2-D model's model/bn1 pairs by name with the conv model's, but has 8 channels
    against 4: not a stale step but another architecture, said as such."""
    other = MODELS / "tf1_nonfused_2d" / "ckpt"
    code, report, _ = _compare(runner, str(other), str(TF1 / "frozen.pb"))
    assert code == 1 and report is not None
    bn1 = next(layer for layer in report["layers"] if layer["scope"] == "model/bn1")
    codes = [f["code"] for f in bn1["findings"]]
    assert codes == ["shape-mismatch"], bn1["findings"]
    assert "has 8 channels" in bn1["findings"][0]["message"]
    assert "graph's layer 4" in bn1["findings"][0]["message"]


def test_a_checkpoint_found_by_search_is_an_input_too(runner: CliRunner, tmp_path: Path) -> None:
    """--search reads the checkpoints under DIR: a report may not land on one of them."""
    source = MODELS / "tf1_wrong_ckpt" / "ckpt"
    given, elsewhere = tmp_path / "given", tmp_path / "elsewhere" / "deep"
    given.mkdir()
    elsewhere.mkdir(parents=True)
    for path in source.glob("model.ckpt-20.*"):
        shutil.copy(path, given / path.name)
    for path in source.glob("model.ckpt-10.*"):
        shutil.copy(path, elsewhere / path.name)
    graph = str(MODELS / "tf1_wrong_ckpt" / "frozen.pb")
    args = [str(given / "model.ckpt-20"), graph, "--search", str(tmp_path / "elsewhere")]
    code, report, _ = _compare(runner, *args)
    assert code == 1 and report is not None
    wrong = [f["message"] for f in report["findings"] if f["code"] == "wrong-checkpoint"]
    assert len(wrong) == 1 and str(elsewhere / "model.ckpt-10") in wrong[0]
    before = _digest(elsewhere)
    target = elsewhere / "model.ckpt-10.index"
    result = runner.invoke(main, ["compare", *args, "--no-run", "-o", str(target)])
    assert result.exit_code == 2 and "never writes to its inputs" in result.stderr
    assert _digest(elsewhere) == before
