"""compare with a run: the same inputs through the frozen graph and the checkpoint's reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import MODELS

from bnaudit import protos, run
from bnaudit.activation import activation_diff
from bnaudit.cli import main
from bnaudit.graph import read_graph_def


def _run(runner: CliRunner, folder: str, checkpoint: str, *args: str) -> tuple[int, Any, str]:
    graph = MODELS / folder / "frozen.pb"
    result = runner.invoke(
        main, ["compare", str(MODELS / folder / checkpoint), str(graph), "--format", "json", *args]
    )
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, report, result.stderr


def _divergent(report: Any) -> list[str]:
    return [
        layer["scope"]
        for layer in report["layers"]
        if any(f["code"] == "activation-divergence" for f in layer["findings"])
    ]


def test_correct_freeze_runs_clean(runner: CliRunner) -> None:
    code, report, stderr = _run(runner, "tf1_fused_cond", "ckpt")
    assert code == 0, stderr
    assert report["first_divergent_layer"] is None and report["reference"] == "patched"
    for layer in report["layers"]:
        assert set(layer["activation"]) == {
            "max_abs_diff",
            "max_rel_diff",
            "mean_abs_diff",
            "cosine",
        }
        assert layer["activation"]["max_abs_diff"] < 1e-5
    assert [o["name"] for o in report["outputs"]] == ["output"]
    assert "loading TensorFlow" in stderr and "running frozen graph" in stderr


@pytest.mark.parametrize(
    ("folder", "checkpoint", "first"),
    [
        ("tf1_training_default", "ckpt/model.ckpt-20", "model/bn1"),
        ("tf2_if_training_default", "ckpt/model.ckpt-5", "model/bn1"),
        ("keras3_training_frozen", "model.keras", "functional_1/bn1_1"),
    ],
)
def test_training_mode_diverges_from_the_first_layer(
    runner: CliRunner, folder: str, checkpoint: str, first: str
) -> None:
    code, report, _ = _run(runner, folder, checkpoint, "--quiet")
    assert code == 1
    assert report["first_divergent_layer"] == first
    layer = report["layers"][0]
    message = next(f["message"] for f in layer["findings"] if f["code"] == "activation-divergence")
    assert "training-mode" in message


def test_wrong_checkpoint_diverges_at_the_first_layer(runner: CliRunner) -> None:
    code, report, _ = _run(runner, "tf1_wrong_ckpt", "ckpt", "-q")
    assert code == 1 and report["first_divergent_layer"] == "model/bn1"
    code, report, _ = _run(runner, "tf1_wrong_ckpt", "ckpt/model.ckpt-10", "-q")
    assert code == 0 and report["first_divergent_layer"] is None


def test_one_tampered_layer_is_named_first(runner: CliRunner) -> None:
    code, report, stderr = _run(runner, "tf1_tampered_layer", "ckpt", "-q")
    assert code == 1
    assert report["first_divergent_layer"] == "model/bn2"
    assert _divergent(report) == ["model/bn2"]
    assert "first divergent layer model/bn2" in stderr


def test_bare_flag_warns_and_passes_unless_fed_true(runner: CliRunner) -> None:
    code, report, stderr = _run(runner, "tf1_bare_flag", "ckpt", "-q")
    assert code == 0 and report["first_divergent_layer"] is None
    assert "warning: is_training has no default; fed False" in stderr
    code, report, _ = _run(runner, "tf1_bare_flag", "ckpt", "-q", "--feed", "is_training=true")
    assert code == 1 and report["first_divergent_layer"] == "model/bn1"
    message = report["layers"][0]["findings"][-1]["message"]
    assert "is_training fed True" in message


def test_saved_inputs_replay_identically(runner: CliRunner, tmp_path: Path) -> None:
    saved = tmp_path / "inputs.npz"
    args = ("-q", "--seed", "1", "--batch", "3")
    _, first, _ = _run(
        runner, "tf1_training_default", "ckpt/model.ckpt-20", *args, "--save-inputs", str(saved)
    )
    assert np.load(saved)["input"].shape == (3, 8, 8, 3)
    _, replay, _ = _run(
        runner,
        "tf1_training_default",
        "ckpt/model.ckpt-20",
        "-q",
        "--seed",
        "2",
        "--inputs",
        str(saved),
    )
    _, other, _ = _run(runner, "tf1_training_default", "ckpt/model.ckpt-20", "-q", "--seed", "2")
    acts = [[layer["activation"] for layer in r["layers"]] for r in (first, replay, other)]
    assert acts[0] == acts[1] != acts[2]


def test_chunks_give_the_same_answer(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    _, whole, _ = _run(runner, "tf1_wrong_ckpt", "ckpt", "-q")
    monkeypatch.setattr(run, "CHUNK_BYTES", 1)  # one tensor per chunk
    _, chunked, stderr = _run(runner, "tf1_wrong_ckpt", "ckpt")
    assert "running frozen graph (chunk 3/3)" in stderr  # two layers and the output
    assert whole["layers"] == chunked["layers"] and whole["outputs"] == chunked["outputs"]


def _with_node(tmp_path: Path, op: str) -> Path:
    graph_def = read_graph_def(MODELS / "tf1_fused_cond" / "frozen.pb")
    name = graph_def.node.add(name="bnaudit_test/filename", op="Const")
    name.attr["dtype"].type = protos.DATA_TYPES["DT_STRING"]
    name.attr["value"].tensor.dtype = protos.DATA_TYPES["DT_STRING"]
    name.attr["value"].tensor.string_val.append(str(tmp_path / "never.txt").encode())
    graph_def.node.add(name="bnaudit_test/read", op=op, input=["bnaudit_test/filename"])
    path = tmp_path / "unsafe.pb"
    path.write_bytes(graph_def.SerializeToString())
    return path


def test_unsafe_ops_refused_unless_allowed(runner: CliRunner, tmp_path: Path) -> None:
    graph = _with_node(tmp_path, "ReadFile")
    ckpt = str(MODELS / "tf1_fused_cond" / "ckpt")
    result = runner.invoke(main, ["compare", ckpt, str(graph)])
    assert result.exit_code == 3 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "ReadFile" in result.stderr and "--allow-unsafe-ops" in result.stderr
    assert runner.invoke(main, ["compare", ckpt, str(graph), "--no-run"]).exit_code == 0
    allowed = runner.invoke(main, ["compare", ckpt, str(graph), "-q", "--allow-unsafe-ops"])
    assert allowed.exit_code == 0, allowed.stderr


def test_graph_tensorflow_cannot_run_is_one_line_exit_3(runner: CliRunner) -> None:
    code, report, stderr = _run(runner, "tf2_if_nonfused_2d", "ckpt/model.ckpt-5", "-q")
    assert code == 3 and report is None
    assert stderr.count("\n") == 1 and "cannot run the frozen graph" in stderr


def test_reference_kinds(runner: CliRunner) -> None:
    code, report, _ = _run(runner, "tf1_fused_cond", "ckpt", "-q", "--reference", "patched")
    assert code == 0 and report["reference"] == "patched"
    code, _, stderr = _run(runner, "tf1_fused_cond", "ckpt", "--reference", "meta")
    assert code == 3 and "not available yet" in stderr


def test_bad_feed_and_shape_options(runner: CliRunner) -> None:
    code, _, stderr = _run(runner, "tf1_fused_cond", "ckpt", "--feed", "nope=true")
    assert code == 3 and "not a placeholder" in stderr
    code, _, stderr = _run(runner, "tf1_fused_cond", "ckpt", "--shape", "input=1,9,9,3")
    assert code == 3 and "does not fit" in stderr
    code, _, _ = _run(runner, "tf1_fused_cond", "ckpt", "--shape", "input")
    assert code == 2


def test_activation_diff_numbers() -> None:
    a = np.array([[1.0, 2.0], [3.0, np.nan]], dtype=np.float32)
    same = activation_diff(a, a.copy(), 1e-5, 1e-5)
    assert (same.max_abs_diff, same.max_rel_diff, same.divergent) == (0.0, 0.0, False)
    assert same.cosine == pytest.approx(1.0)
    b = a + np.float32(0.5)
    diff = activation_diff(b, a, 1e-5, 1e-5)
    assert diff.max_abs_diff == pytest.approx(0.5) and diff.mean_abs_diff == pytest.approx(0.375)
    assert diff.max_rel_diff == pytest.approx(0.5) and diff.divergent
    small = activation_diff(a + np.float32(1e-6), a, 1e-5, 1e-5)
    assert not small.divergent  # abs within atol, so not divergent whatever the rel
