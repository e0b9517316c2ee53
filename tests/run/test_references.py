"""The checkpoint's side of a run: which reference `choose` picks (or refuses), and what each
builder returns."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
from conftest import MODELS

from bnaudit.audit.compare import StaticAudit, audit
from bnaudit.errors import BnauditError
from bnaudit.run.inputs import InputOptions, Inputs, make_inputs, placeholders
from bnaudit.run.options import RunOptions
from bnaudit.run.plan import final_outputs
from bnaudit.run.references import build_reference, choose, training_flags
from bnaudit.run.sides import KerasSide, MetaSide, Side


@cache
def _static(folder: str, checkpoint: str) -> StaticAudit:
    graph = MODELS / folder / "frozen.pb"
    if not graph.exists():
        graph = MODELS / folder / "folded.pb"
    return audit(MODELS / folder / checkpoint, graph)


def _inputs(static: StaticAudit, **feeds: str) -> Inputs:
    found = placeholders(static.graph.graph_def)
    return make_inputs(found, training_flags(static), InputOptions(feeds=feeds))


def _build(static: StaticAudit, kind: str, inputs: Inputs | None = None) -> tuple[object, list]:
    choice = choose(kind, static)  # type: ignore[arg-type]
    inputs = inputs or _inputs(static)
    rows = static.report.layers
    return build_reference(choice, static, inputs, rows, final_outputs(static.graph), RunOptions())


# choose -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "checkpoint"),
    [("tf1_fused_cond", "ckpt"), ("keras3_bn", "model.keras"), ("tf1_const_training", "ckpt")],
)
def test_patched_is_always_granted(folder: str, checkpoint: str) -> None:
    choice = choose("patched", _static(folder, checkpoint))
    assert (choice.kind, choice.reason, choice.meta) == (
        "patched",
        "asked for with --reference patched",
        None,
    )


def test_keras_on_a_keras_model() -> None:
    static = _static("keras3_bn", "model.keras")
    assert static.checkpoint_kind == "keras-archive"
    asked = choose("keras", static)
    assert (asked.kind, asked.reason) == ("keras", "model.keras loaded with Keras")
    auto = choose("auto", static)
    assert (auto.kind, auto.meta) == ("keras", None)
    assert auto.reason == "auto: the checkpoint model.keras is a Keras model"


@pytest.mark.parametrize(
    ("folder", "checkpoint", "kind"),
    [
        ("tf1_fused_cond", "ckpt", "tf1-saver"),
        ("keras3_bn", "model.weights.h5", "keras-h5"),
        ("keras3_bn", "ckpt/ckpt", "tf2-object"),
    ],
)
def test_keras_refused_without_a_keras_model(folder: str, checkpoint: str, kind: str) -> None:
    with pytest.raises(BnauditError) as raised:
        choose("keras", _static(folder, checkpoint))
    message = str(raised.value)
    assert f"--reference keras needs a .keras model as the checkpoint, not a {kind}" in message
    assert message.endswith("use --reference patched")


def test_meta_beside_a_saver_checkpoint() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    asked = choose("meta", static)
    assert asked.kind == "meta" and asked.meta is not None
    assert asked.meta.path == static.checkpoint_path.with_name("model.ckpt-20.meta")
    assert asked.reason == "model.ckpt-20.meta is beside the checkpoint"
    auto = choose("auto", static)
    assert auto.kind == "meta" and auto.meta is not None and auto.meta.path == asked.meta.path
    assert auto.reason == "auto: model.ckpt-20.meta is beside the checkpoint"


@pytest.mark.parametrize(
    ("folder", "checkpoint", "why"),
    [
        ("keras3_bn", "model.keras", "a keras-archive checkpoint has no .meta"),
        ("keras3_bn", "model.weights.h5", "a keras-h5 checkpoint has no .meta"),
        ("tf2_function_cond", "ckpt/ckpt", "a tf2-object checkpoint has no .meta"),
        ("tf2_if_training_default", "ckpt", "no .meta beside model.ckpt-5"),
        ("tf1_const_training", "ckpt", "no flag switches it to inference"),
        ("tf1_trainable_only_saver", "ckpt", "does not restore model/bn1/moving_mean"),
    ],
)
def test_meta_refused_without_a_usable_meta(folder: str, checkpoint: str, why: str) -> None:
    with pytest.raises(BnauditError) as raised:
        choose("meta", _static(folder, checkpoint))
    message = str(raised.value)
    assert message.startswith("--reference meta needs a usable TF1 .meta beside the checkpoint (")
    assert why in message and message.endswith("); use --reference patched")


@pytest.mark.parametrize(
    ("folder", "checkpoint", "why"),
    [
        ("keras3_bn", "model.weights.h5", "a keras-h5 checkpoint has no .meta"),
        ("tf2_if_training_default", "ckpt", "no .meta beside model.ckpt-5"),
        ("tf1_const_training", "ckpt", "no flag switches it to inference"),
    ],
)
def test_auto_falls_back_to_patched_and_says_why(folder: str, checkpoint: str, why: str) -> None:
    choice = choose("auto", _static(folder, checkpoint))
    assert choice.kind == "patched" and choice.meta is None
    assert choice.reason.startswith("auto: ") and why in choice.reason
    assert choice.reason.endswith("; the frozen graph patched with the checkpoint")


# build_reference ------------------------------------------------------------------------------


def test_patched_side_forces_the_flag_and_is_not_fed_it() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    inputs = _inputs(static, is_training="true")
    assert inputs.switches.keys() == {"is_training"}
    side, notes = _build(static, "patched", inputs)
    assert isinstance(side, Side) and side.label == "reference"
    assert side.feeds.keys() == {"input"}  # the forced flag is a Const now: never fed
    assert side.feeds["input"] is inputs.arrays["input"]
    assert side.graph_def is not static.graph.graph_def
    assert notes == [
        "the frozen graph with the checkpoint's BN values, in inference mode "
        "(is_training forced False)"
    ]


def test_patched_side_notes_refolds_and_missing_values() -> None:
    _, notes = _build(_static("tf1_folded_stale", "ckpt"), "patched")
    assert notes == [
        "the frozen graph with the checkpoint's BN values, in inference mode; "
        "2 folded BN folded again from it"
    ]
    _, notes = _build(_static("tf1_trainable_only_saver", "ckpt"), "patched")
    assert notes[0].endswith("in inference mode (is_training forced False)")
    assert notes[1:] == [
        f"model/{bn}: the checkpoint has no {role}; the reference keeps the frozen value"
        for bn in ("bn1", "bn2")
        for role in ("moving_mean", "moving_variance")
    ]


def test_meta_side_restores_the_training_graph_with_its_flags_false() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    inputs = _inputs(static, is_training="true")  # the frozen graph's switch, not the meta's
    side, notes = _build(static, "meta", inputs)
    assert isinstance(side, MetaSide)
    meta_path = static.checkpoint_path.with_name("model.ckpt-20.meta")
    assert side.meta_graph == meta_path.read_bytes()
    assert side.checkpoint == str(static.checkpoint_path)
    assert (side.restore_op, side.filename_tensor) == ("save/restore_all", "save/Const:0")
    assert side.label == "reference model.ckpt-20.meta"
    assert side.feeds.keys() == {"is_training", "input"}
    assert side.feeds["is_training"].dtype == np.bool_ and not side.feeds["is_training"].any()
    assert side.feeds["input"] is inputs.arrays["input"]
    assert side.fetches == {
        "model/bn1/cond/Merge:0": "model/bn1/cond/Merge:0",
        "model/bn2/cond/Merge:0": "model/bn2/cond/Merge:0",
        "output:0": "output:0",
    }
    assert notes == ["model.ckpt-20.meta restored from model.ckpt-20, is_training fed False"]


def test_meta_side_refuses_an_input_the_meta_lacks() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    inputs = _inputs(static)
    renamed = dataclasses.replace(inputs, arrays={"images": inputs.arrays["input"]})
    with pytest.raises(BnauditError, match=r"images has no counterpart in model\.ckpt-20\.meta"):
        _build(static, "meta", renamed)


def test_keras_side_fetches_layers_by_checkpoint_scope() -> None:
    static = _static("keras3_bn", "model.keras")
    side, notes = _build(static, "keras")
    assert isinstance(side, KerasSide)
    assert side.path == static.checkpoint_path and side.label == "reference model.keras"
    assert side.inputs == ["input"] and side.feeds.keys() == {"input"}
    assert side.outputs == 1
    assert side.fetches == {
        "functional_1/bn1_1/batchnorm/add_1:0": "bn1",
        "functional_1/bn2_1/batchnorm/add_1:0": "bn2",
        "Identity:0": "output:0",
    }
    assert notes == ["model.keras run by Keras with training=False"]


def test_keras_side_leaves_out_a_layer_applied_twice() -> None:
    static = _static("keras3_bn", "model.keras")
    bn1, bn2 = static.report.layers
    twice = dataclasses.replace(bn2, name="functional_1/bn1_2/batchnorm/add_1")
    twice = dataclasses.replace(twice, checkpoint_scope="bn1")
    unpaired = dataclasses.replace(bn2, name="other/add_1", checkpoint_scope=None)
    choice = choose("keras", static)
    side, _ = build_reference(
        choice, static, _inputs(static), [bn1, twice, unpaired], [], RunOptions()
    )
    assert isinstance(side, KerasSide)
    # bn1 has two rows, so no single output: both left out; a row without a checkpoint scope
    # is fetched by its own scope
    assert side.fetches.keys() == {"other/add_1:0"}
    assert not side.fetches["other/add_1:0"].startswith("functional_1/")
    assert side.outputs == 0


def test_training_flags_are_the_detected_flags() -> None:
    assert training_flags(_static("tf1_fused_cond", "ckpt")) == {"is_training"}
    assert training_flags(_static("tf1_const_training", "ckpt")) == set()
    assert training_flags(_static("keras3_bn", "model.keras")) == set()
