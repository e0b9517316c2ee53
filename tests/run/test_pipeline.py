"""compare with a run: the same inputs through the frozen graph and the checkpoint's reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import MODELS

from bnaudit.audit.compare import audit
from bnaudit.cli import main
from bnaudit.formats import protos
from bnaudit.model.graphdef import read_graph_def
from bnaudit.report.text import render_json
from bnaudit.run.chunks import ChunkBudget
from bnaudit.run.diff import activation_diff
from bnaudit.run.options import RunOptions
from bnaudit.run.pipeline import execute, interpret_run
from bnaudit.run.plan import plan_run


def _run(runner: CliRunner, folder: str, checkpoint: str, *args: str) -> tuple[int, Any, str]:
    graph = MODELS / folder / "frozen.pb"
    if not graph.exists():
        graph = MODELS / folder / "folded.pb"
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
    assert report["first_divergent_layer"] is None and report["reference"] == "meta"
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


class _Steps:
    """A Progress that keeps every line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, text: str) -> None:
        self.lines.append(text)

    def warn(self, text: str) -> None:
        self.lines.append(f"warning: {text}")


def _run_api(
    folder: str, checkpoint: str, reference: str = "auto", budget: ChunkBudget | None = None
) -> tuple[Any, dict[str, tuple[str, ...]], list[str]]:
    """Plan, execute and interpret as `compare` does; the JSON report, what each side was fed
    from earlier chunks, and the progress lines."""
    graph = MODELS / folder / "frozen.pb"
    if not graph.exists():
        graph = MODELS / folder / "folded.pb"
    static = audit(MODELS / folder / checkpoint, graph)
    options = RunOptions(reference=reference, budget=budget or ChunkBudget())  # type: ignore[arg-type]
    plan = plan_run(static, options)
    steps = _Steps()
    reduced = execute(plan, options, steps)
    report = json.loads(render_json(interpret_run(static, plan, reduced)))
    return report, reduced.carried, steps.lines


def test_chunks_give_the_same_answer(runner: CliRunner) -> None:
    _, whole, _ = _run(runner, "tf1_wrong_ckpt", "ckpt", "-q")
    chunked, _, steps = _run_api("tf1_wrong_ckpt", "ckpt", budget=ChunkBudget(bytes=1))
    # two layers, each after its input, and the output
    assert "running frozen graph (chunk 5/5)" in steps
    assert whole["layers"] == chunked["layers"] and whole["outputs"] == chunked["outputs"]


def _assert_same_report(whole: Any, chunked: Any) -> None:
    """Equal but for the activation numbers, which agree within 1e-6 (TensorFlow may optimise
    a graph cut at other tensors slightly differently)."""

    def numbers(report: Any) -> list[Any]:
        return [row["activation"] for row in [*report["layers"], *report["outputs"]]]

    def rest(report: Any) -> Any:
        return {
            **report,
            "layers": [{**row, "activation": None} for row in report["layers"]],
            "outputs": [{**row, "activation": None} for row in report["outputs"]],
        }

    assert rest(chunked) == rest(whole)
    for ours, theirs in zip(numbers(chunked), numbers(whole), strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert ours.keys() == theirs.keys()
            for key, value in theirs.items():
                assert ours[key] == (value if value is None else pytest.approx(value, abs=1e-6))


@pytest.mark.parametrize(
    ("folder", "checkpoint", "reference", "carrying"),
    [
        # TF1 control flow: every chunk runs from the inputs, in both graphs.
        ("tf1_wrong_ckpt", "ckpt", "meta", []),
        ("tf1_tampered_layer", "ckpt", "patched", []),
        # A .meta or .keras reference runs each chunk whole; the frozen graph carries.
        ("tf2_if_fused", "ckpt", "meta", ["frozen graph"]),
        ("keras3_wrong_ckpt", "model.keras", "keras", ["frozen graph"]),
        ("tf2_if_fused", "ckpt", "patched", ["frozen graph", "reference"]),
        ("keras3_wrong_ckpt", "model.weights.h5", "patched", ["frozen graph", "reference"]),
        # The patched reference normalizes with other tensors than the frozen graph.
        ("keras3_training_frozen", "model.weights.h5", "patched", ["frozen graph", "reference"]),
        ("tf1_folded_stale", "ckpt", "patched", ["frozen graph", "reference"]),
    ],
)
def test_chunks_resuming_from_carried_tensors_give_the_same_answer(
    folder: str, checkpoint: str, reference: str, carrying: list[str]
) -> None:
    whole, _, _ = _run_api(folder, checkpoint, reference)
    one_each = ChunkBudget(tensors=1)  # one fetched tensor a chunk, carries within the bytes
    chunked, carried, steps = _run_api(folder, checkpoint, reference, one_each)
    assert (
        f"running frozen graph (chunk {len(chunked['layers']) + len(chunked['outputs'])}/"
        in " ".join(steps)
    )
    assert sorted(label for label, names in carried.items() if names) == carrying
    _assert_same_report(whole, chunked)


def test_carried_tensors_count_against_the_budget() -> None:
    whole, _, _ = _run_api("keras3_wrong_ckpt", "model.weights.h5")
    # Room for one fetched tensor, no carry.
    chunked, carried, steps = _run_api(
        "keras3_wrong_ckpt", "model.weights.h5", budget=ChunkBudget(bytes=1)
    )
    assert "running reference (chunk 5/5)" in steps  # each layer's input, its output
    assert carried.keys() == {"frozen graph", "reference"} and not any(carried.values())
    _assert_same_report(whole, chunked)


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
    """Found before TensorFlow starts; and, with the checks lifted, TensorFlow's own refusal
    is one line too."""
    code, report, stderr = _run(runner, "tf2_if_nonfused_2d", "ckpt/model.ckpt-5", "-q")
    assert code == 3 and report is None
    assert stderr.count("\n") == 1 and "TensorFlow cannot run" in stderr
    assert "returns `ReadVariableOp:value:0`" in stderr
    args = ("-q", "--allow-unsafe-ops")
    code, report, stderr = _run(runner, "tf2_if_nonfused_2d", "ckpt/model.ckpt-5", *args)
    assert code == 3 and report is None
    assert stderr.count("\n") == 1 and "cannot run the frozen graph" in stderr


def test_reference_kinds(runner: CliRunner) -> None:
    code, report, _ = _run(runner, "tf1_fused_cond", "ckpt", "-q", "--reference", "patched")
    assert code == 0 and report["reference"] == "patched"
    assert report["reference_reason"] == "asked for with --reference patched"
    code, _, stderr = _run(runner, "tf1_fused_cond", "ckpt", "--reference", "keras")
    assert code == 3 and "--reference keras needs a .keras model" in stderr


@pytest.mark.parametrize(
    ("folder", "checkpoint", "kind", "why"),
    [
        ("tf1_fused_cond", "ckpt", "meta", "model.ckpt-20.meta is beside the checkpoint"),
        # model.ckpt-10 has no .meta of its own; model.ckpt-20's Saver fits it.
        ("tf1_wrong_ckpt", "ckpt/model.ckpt-10", "meta", "model.ckpt-20.meta is in the"),
        ("keras3_bn", "model.keras", "keras", "the checkpoint model.keras is a Keras model"),
        ("keras3_bn", "model.weights.h5", "patched", "a keras-h5 checkpoint has no .meta"),
        ("tf1_trainable_only_saver", "ckpt", "patched", "does not restore model/bn1/moving_mean"),
        ("tf1_const_training", "ckpt", "patched", "no flag switches it to inference"),
        ("tf1_contrib_style", "ckpt", "patched", "has shape [?, 8, 8, 3], the frozen graph's"),
        ("tf2_if_training_default", "ckpt", "patched", "no .meta beside model.ckpt-5"),
        ("tf2_function_cond", "ckpt/ckpt", "patched", "a tf2-object checkpoint has no .meta"),
    ],
)
def test_auto_reference_says_which_and_why(
    runner: CliRunner, folder: str, checkpoint: str, kind: str, why: str
) -> None:
    _, report, stderr = _run(runner, folder, checkpoint, "-q")
    assert report["reference"] == kind
    assert report["reference_reason"].startswith("auto: ") and why in report["reference_reason"]
    assert f"note: reference: {kind} (auto: " in stderr


@pytest.mark.parametrize(
    ("folder", "checkpoint", "first"),
    [
        ("tf1_fused_cond", "ckpt", None),
        ("tf2_if_fused", "ckpt", None),
        ("tf1_nonfused_2d", "ckpt", None),
        ("tf1_training_default", "ckpt", "model/bn1"),
        ("tf1_wrong_ckpt", "ckpt", "model/bn1"),
        ("tf1_wrong_ckpt", "ckpt/model.ckpt-10", None),
        ("tf1_tampered_layer", "ckpt", "model/bn2"),
    ],
)
def test_meta_reference(runner: CliRunner, folder: str, checkpoint: str, first: str | None) -> None:
    code, report, stderr = _run(runner, folder, checkpoint, "--reference", "meta")
    assert code == (0 if first is None else 1), stderr
    assert report["reference"] == "meta" and report["first_divergent_layer"] == first
    assert "restoring the checkpoint into reference model.ckpt-" in stderr
    assert all(layer["activation"] is not None for layer in report["layers"])
    if folder == "tf1_tampered_layer":
        assert _divergent(report) == ["model/bn2"]


def test_meta_reference_refused_when_unusable(runner: CliRunner) -> None:
    code, report, stderr = _run(runner, "tf1_const_training", "ckpt", "--reference", "meta")
    assert code == 3 and report is None and stderr.count("\n") == 1
    assert "--reference meta needs a usable TF1 .meta" in stderr
    code, _, stderr = _run(runner, "tf2_function_cond", "ckpt/ckpt", "--reference", "meta")
    assert code == 3 and "tf2-object checkpoint has no .meta" in stderr


@pytest.mark.parametrize(
    ("folder", "first"),
    [
        ("keras3_bn", None),
        ("keras3_dense_bn", None),
        ("keras3_wrong_ckpt", "functional_1/bn1_1"),
        ("keras3_training_frozen", "functional_1/bn1_1"),
    ],
)
def test_keras_reference(runner: CliRunner, folder: str, first: str | None) -> None:
    code, report, stderr = _run(runner, folder, "model.keras", "--reference", "keras")
    assert code == (0 if first is None else 1), stderr
    assert report["reference"] == "keras" and report["first_divergent_layer"] == first
    assert "loading reference model.keras" in stderr
    assert all(layer["activation"] is not None for layer in report["layers"])
    assert [o["name"] for o in report["outputs"]] == ["Identity"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras saving, under numpy 2
def test_keras_reference_keeps_safe_mode(runner: CliRunner, tmp_path: Path) -> None:
    """A .keras holding a Python lambda is never deserialized: exit 3, the reason on stderr."""
    import keras

    inp = keras.Input((8, 8, 3), name="input")
    h = keras.layers.Lambda(lambda x: x * 2.0, name="twice")(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(h)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="dense")(h))
    path = tmp_path / "lambda.keras"
    model.save(path)
    graph = str(MODELS / "keras3_bn" / "frozen.pb")
    result = runner.invoke(main, ["compare", str(path), graph, "-q"])
    assert result.exit_code == 3 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "holds Python code (a lambda)" in result.stderr
    assert "safe mode" in result.stderr


@pytest.mark.parametrize(
    ("folder", "checkpoint", "first"),
    [
        ("tf1_folded", "ckpt/model.ckpt-20", None),
        ("tf1_folded_stale", "ckpt", "model/bn1"),
        ("tf1_folded_stale", "ckpt/model.ckpt-10", None),
    ],
)
def test_patched_reference_folds_again(
    runner: CliRunner, folder: str, checkpoint: str, first: str | None
) -> None:
    code, report, stderr = _run(runner, folder, checkpoint, "-q", "--reference", "patched")
    assert code == (0 if first is None else 1), stderr
    assert report["first_divergent_layer"] == first
    assert "2 folded BN folded again from it" in stderr
    acts = {layer["scope"]: layer["activation"] for layer in report["layers"]}
    assert set(acts) == {"model/bn1", "model/bn2"}
    for scope, act in acts.items():
        assert (act["max_abs_diff"] > 0.1) == (first is not None), scope
    if first is not None:
        message = report["layers"][0]["findings"][-1]["message"]
        assert "likely cause, folded-mismatch" in message


def _meta_copy(tmp_path: Path, edit: Any) -> Path:
    """tf1_fused_cond's checkpoint folder with its .meta's graph edited by `edit`."""
    folder = tmp_path / "ckpt"
    shutil.copytree(MODELS / "tf1_fused_cond" / "ckpt", folder)
    meta = folder / "model.ckpt-20.meta"
    message = protos.MetaGraphDef.FromString(meta.read_bytes())
    edit(message.graph_def)
    meta.write_bytes(message.SerializeToString())
    return folder


def _string_const(graph_def: Any, name: str, value: str) -> None:
    node = graph_def.node.add(name=name, op="Const")
    node.attr["dtype"].type = protos.DATA_TYPES["DT_STRING"]
    node.attr["value"].tensor.dtype = protos.DATA_TYPES["DT_STRING"]
    node.attr["value"].tensor.string_val.append(value.encode())


def test_meta_safety_exempts_only_the_savers_own_ops(runner: CliRunner, tmp_path: Path) -> None:
    graph = str(MODELS / "tf1_fused_cond" / "frozen.pb")

    def read_file(graph_def: Any) -> None:
        _string_const(graph_def, "save/other_file", str(tmp_path / "never.txt"))
        graph_def.node.add(name="save/read", op="ReadFile", input=["save/other_file"])

    def restore_elsewhere(graph_def: Any) -> None:
        _string_const(graph_def, "save/other_prefix", str(tmp_path / "elsewhere"))
        names = next(n for n in graph_def.node if n.name == "save/RestoreV2/tensor_names")
        slices = "save/RestoreV2/shape_and_slices"
        graph_def.node.add(
            name="save/RestoreV2_other",
            op="RestoreV2",
            input=["save/other_prefix", names.name, slices],
            attr={
                "dtypes": next(n for n in graph_def.node if n.name == "save/RestoreV2").attr[
                    "dtypes"
                ]
            },
        )

    for edit, op in ((read_file, "ReadFile"), (restore_elsewhere, "RestoreV2")):
        folder = _meta_copy(tmp_path / op, edit)
        result = runner.invoke(main, ["compare", str(folder), graph, "--reference", "meta"])
        assert result.exit_code == 3 and result.stdout == "", result.stderr
        assert f"{op} (" in result.stderr and "--allow-unsafe-ops" in result.stderr
        assert "SaveV2" not in result.stderr  # the Saver's own ops are not what is refused
        allowed = runner.invoke(
            main, ["compare", str(folder), graph, "-q", "--reference", "meta", "--allow-unsafe-ops"]
        )
        assert allowed.exit_code == 0, allowed.stderr
    assert not (tmp_path / "never.txt").exists()


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


@pytest.mark.parametrize(
    ("folder", "reference"),
    [
        ("slim_resnet_v1_healthy", "meta"),
        ("slim_resnet_v1_healthy", "patched"),
        ("slim_inception_v2_folded", "patched"),
    ],
)
def test_a_healthy_third_party_net_agrees_exactly(
    runner: CliRunner, folder: str, reference: str
) -> None:
    """Float noise is not a divergence: with graph rewrites off, and a fold that matches
    the checkpoint kept as frozen, a healthy net differs from its reference by exactly 0
    (it was up to 2e-5, chunk by chunk, and from refolding in float64)."""
    code, report, _ = _run(runner, folder, "ckpt", "-q", "--reference", reference)
    assert code == 0 and report["reference"] == reference
    differences = [layer["activation"]["max_abs_diff"] for layer in report["layers"]]
    differences += [output["activation"]["max_abs_diff"] for output in report["outputs"]]
    assert differences and set(differences) == {0.0}
