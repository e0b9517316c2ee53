"""The `meta` reference: reading and vetting a Saver's `.meta`, finding one beside a checkpoint,
why one is unusable, what it fetches, and what it may run."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import MODELS

from bnaudit.audit.compare import StaticAudit, audit
from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.run.inputs import placeholders
from bnaudit.run.meta import MetaGraph, check_meta_safe, fetch_map, find_meta, read_meta, unusable

FUSED_COND = MODELS / "tf1_fused_cond" / "ckpt"
FUSED_META = FUSED_COND / "model.ckpt-20.meta"


@cache
def _static(folder: str, checkpoint: str) -> StaticAudit:
    return audit(MODELS / folder / checkpoint, MODELS / folder / "frozen.pb")


@cache
def _meta(path: Path = FUSED_META) -> MetaGraph:
    return read_meta(path)


def _data_inputs(static: StaticAudit) -> dict[str, tuple[int, ...] | None]:
    return {
        p.name: p.shape
        for p in placeholders(static.graph.graph_def)
        if not p.has_default and not p.is_switch
    }


def _edited(tmp_path: Path, edit: Callable[[Any], None], name: str = "model.ckpt-20.meta") -> Path:
    message = protos.MetaGraphDef.FromString(FUSED_META.read_bytes())
    edit(message)
    path = tmp_path / name
    path.write_bytes(message.SerializeToString())
    return path


def _string_const(graph_def: Any, name: str, value: str) -> None:
    node = graph_def.node.add(name=name, op="Const")
    node.attr["dtype"].type = protos.DATA_TYPES["DT_STRING"]
    node.attr["value"].tensor.dtype = protos.DATA_TYPES["DT_STRING"]
    node.attr["value"].tensor.string_val.append(value.encode())


# read_meta ------------------------------------------------------------------------------------


def test_read_meta_finds_the_saver_and_vets_its_ops() -> None:
    meta = _meta()
    assert meta.path == FUSED_META and meta.data == FUSED_META.read_bytes()
    assert (meta.restore_op, meta.filename_tensor) == ("save/restore_all", "save/Const:0")
    assert meta.saver_nodes == {"save/RestoreV2", "save/SaveV2"}
    assert meta.save_nodes == {"save/SaveV2"}
    # the keys its restore op reads: every variable of the model, the slots, the step
    static = _static("tf1_fused_cond", "ckpt")
    assert meta.saver_keys == static.checkpoint_keys
    for role in ("gamma", "beta", "moving_mean", "moving_variance"):
        assert f"model/bn1/{role}" in meta.saver_keys
    assert [layer.scope for layer in meta.layers] == ["model/bn1", "model/bn2"]
    assert all(param.kind == "variable" for param in meta.layers[0].params.values())
    assert meta.flags == ["is_training"]


def test_read_meta_vets_only_the_savers_own_restore(tmp_path: Path) -> None:
    """A restore op in the Saver's scope wired to another file, or one outside its scope, is
    not the Saver's: not vetted (so `check_safe` refuses it)."""

    def add_restores(message: Any) -> None:
        graph_def = message.graph_def
        _string_const(graph_def, "save/other_prefix", str(tmp_path / "elsewhere"))
        names, slices = "save/RestoreV2/tensor_names", "save/RestoreV2/shape_and_slices"
        graph_def.node.add(
            name="save/RestoreV2_other", op="RestoreV2", input=["save/other_prefix", names, slices]
        )
        graph_def.node.add(
            name="loader/RestoreV2", op="RestoreV2", input=["save/Const", names, slices]
        )
        graph_def.node.add(name="loader/SaveV2", op="SaveV2", input=["save/Const", names, slices])

    meta = read_meta(_edited(tmp_path, add_restores))
    assert meta.saver_nodes == {"save/RestoreV2", "save/SaveV2"}
    assert meta.save_nodes == {"save/SaveV2"}
    with pytest.raises(BnauditError) as raised:
        check_meta_safe(meta, ["output:0"], allow=False)
    message = str(raised.value)
    assert "RestoreV2 (" in message and "'save/RestoreV2_other'" in message
    assert "'loader/SaveV2'" in message and "'save/SaveV2'" not in message


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda m: m.graph_def.ClearField("node"), "model.ckpt-20.meta holds no graph"),
        (
            lambda m: m.ClearField("saver_def"),
            "model.ckpt-20.meta has no Saver to restore the checkpoint with",
        ),
        (
            lambda m: setattr(m.saver_def, "restore_op_name", "elsewhere/restore_all"),
            "model.ckpt-20.meta: its Saver names ops the graph lacks",
        ),
        (
            lambda m: setattr(m.saver_def, "filename_tensor_name", "nowhere:0"),
            "model.ckpt-20.meta: its Saver names ops the graph lacks",
        ),
    ],
)
def test_read_meta_refuses_a_meta_without_graph_or_saver(
    tmp_path: Path, edit: Callable[[Any], None], error: str
) -> None:
    with pytest.raises(BnauditError) as raised:
        read_meta(_edited(tmp_path, edit))
    assert str(raised.value) == error


def test_read_meta_refuses_a_file_that_is_no_metagraph(tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt-1.meta"
    path.write_bytes(b"\xff\xff\xff not a protobuf")
    with pytest.raises(BnauditError, match=r"model\.ckpt-1\.meta is not a MetaGraphDef"):
        read_meta(path)


# unusable -------------------------------------------------------------------------------------


def test_a_meta_fitting_the_checkpoint_and_inputs_is_usable() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    assert _data_inputs(static) == {"input": (-1, 8, 8, 3)}
    assert unusable(_meta(), static.checkpoint_keys, _data_inputs(static)) is None


def test_the_training_graph_of_another_model_is_unusable() -> None:
    """Its Saver fits the checkpoint and its inputs the graph's, but it lacks a layer the
    frozen graph has: it is another model's, and a run against it would compare nothing."""
    static = _static("tf1_fused_cond", "ckpt")
    rows = static.report.layers
    inputs = _data_inputs(static)
    assert unusable(_meta(), static.checkpoint_keys, inputs, rows=rows) is None
    other = dataclasses.replace(
        rows[1], name="head/bn9/FusedBatchNormV3", scope="head/bn9", checkpoint_scope="head/bn9"
    )
    assert unusable(_meta(), static.checkpoint_keys, inputs, rows=(rows[0], other)) == (
        "its graph has no head/bn9 (the training graph of another model)"
    )


def test_a_saver_restoring_what_the_checkpoint_lacks() -> None:
    meta = _meta()
    keys = frozenset(meta.saver_keys - {"global_step"})
    assert unusable(meta, keys, {}) == "its Saver restores global_step, which the checkpoint lacks"
    assert unusable(meta, frozenset(), {}) == (
        f"its Saver restores global_step and {len(meta.saver_keys) - 1} more, which the "
        "checkpoint lacks"
    )


def test_a_trainable_only_saver_leaves_the_moving_statistics_unrestored() -> None:
    static = _static("tf1_trainable_only_saver", "ckpt")
    meta = read_meta(static.checkpoint_path.with_name("model.ckpt-20.meta"))
    assert "model/bn1/gamma" in meta.saver_keys
    assert "model/bn1/moving_mean" not in meta.saver_keys
    assert unusable(meta, static.checkpoint_keys, _data_inputs(static)) == (
        "its Saver does not restore model/bn1/moving_mean (model/bn1's moving_mean), so it "
        "would keep its initial value"
    )


def test_a_training_graph_without_a_flag() -> None:
    static = _static("tf1_const_training", "ckpt")
    meta = read_meta(static.checkpoint_path.with_name("model.ckpt-20.meta"))
    assert meta.flags == []
    assert unusable(meta, static.checkpoint_keys, _data_inputs(static)) == (
        "model/bn1 normalizes with batch statistics in the training graph and no flag switches "
        "it to inference"
    )


@pytest.mark.parametrize(
    ("inputs", "problem"),
    [
        ({"input": (2, 8, 8, 3)}, None),
        ({"input": None}, None),  # unknown rank: nothing to check
        (
            {"input": (-1, 3, 8, 8)},
            "its input input has shape [?, 8, 8, 3], the frozen graph's [?, 3, 8, 8] (built for "
            "another layout or size)",
        ),
        ({"input": (-1, 64)}, "its input input has shape [?, 8, 8, 3], the frozen graph's [?, 64]"),
        ({"images": (-1, 8, 8, 3)}, "it has no input named images (an input of the frozen graph)"),
    ],
)
def test_inputs_must_exist_and_fit(
    inputs: dict[str, tuple[int, ...] | None], problem: str | None
) -> None:
    static = _static("tf1_fused_cond", "ckpt")
    found = unusable(_meta(), static.checkpoint_keys, inputs)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_a_meta_built_for_another_layout() -> None:
    """tf1_contrib_style: trained NHWC (the .meta), frozen NCHW."""
    static = _static("tf1_contrib_style", "ckpt")
    meta = read_meta(static.checkpoint_path.with_name("model.ckpt-20.meta"))
    assert unusable(meta, static.checkpoint_keys, _data_inputs(static)) == (
        "its input input has shape [?, 8, 8, 3], the frozen graph's [?, 3, 8, 8] (built for "
        "another layout or size)"
    )


# find_meta ------------------------------------------------------------------------------------


def test_find_meta_takes_the_prefixes_own() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    meta, why = find_meta(static.checkpoint_path, static.checkpoint_keys, _data_inputs(static))
    assert meta is not None and meta.path == FUSED_META
    assert why == "model.ckpt-20.meta is beside the checkpoint"


def test_find_meta_takes_another_steps_meta_the_checkpoint_satisfies() -> None:
    static = _static("tf1_wrong_ckpt", "ckpt/model.ckpt-10")
    assert not static.checkpoint_path.with_name("model.ckpt-10.meta").exists()
    meta, why = find_meta(static.checkpoint_path, static.checkpoint_keys, _data_inputs(static))
    assert meta is not None and meta.path.name == "model.ckpt-20.meta"
    assert why == (
        "model.ckpt-20.meta is in the checkpoint's directory and the checkpoint holds every "
        "variable its Saver restores"
    )


def test_find_meta_with_none_beside() -> None:
    static = _static("tf2_if_training_default", "ckpt")
    meta, why = find_meta(static.checkpoint_path, static.checkpoint_keys, _data_inputs(static))
    assert meta is None and why == "no .meta beside model.ckpt-5"


def test_find_meta_says_why_each_candidate_is_unusable() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    meta, why = find_meta(static.checkpoint_path, frozenset(), _data_inputs(static))
    assert meta is None
    assert why == (
        f"model.ckpt-20.meta: its Saver restores global_step and {len(_meta().saver_keys) - 1} "
        "more, which the checkpoint lacks"
    )


def test_find_meta_passes_over_an_unreadable_meta(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(FUSED_COND, folder)
    (folder / "model.ckpt-20.meta").write_bytes(b"\xff\xff\xff not a protobuf")
    shutil.copy(FUSED_META, folder / "model.ckpt-5.meta")
    static = _static("tf1_fused_cond", "ckpt")
    prefix = folder / "model.ckpt-20"
    meta, why = find_meta(prefix, static.checkpoint_keys, _data_inputs(static))
    assert meta is not None and meta.path == folder / "model.ckpt-5.meta"
    assert why.startswith("model.ckpt-5.meta is in the checkpoint's directory")
    (folder / "model.ckpt-5.meta").unlink()
    meta, why = find_meta(prefix, static.checkpoint_keys, _data_inputs(static))
    assert meta is None and why == "model.ckpt-20.meta is not a MetaGraphDef"


# fetch_map ------------------------------------------------------------------------------------


def test_fetch_map_pairs_layers_by_scope_then_by_name() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    bn1, bn2 = static.report.layers
    renamed = dataclasses.replace(bn1, name="net/bn1/out", scope="net/bn1")  # checkpoint scope
    by_name = dataclasses.replace(bn2, name="model/conv2/BiasAdd", scope="x", checkpoint_scope=None)
    lost = dataclasses.replace(bn2, name="net/nowhere", scope="y", checkpoint_scope=None)
    fetches = fetch_map(_meta(), [renamed, by_name, lost, bn2], ["output", "nowhere"])
    assert fetches == {
        "net/bn1/out:0": "model/bn1/cond/Merge:0",
        "model/conv2/BiasAdd:0": "model/conv2/BiasAdd:0",
        "model/bn2/cond/Merge:0": "model/bn2/cond/Merge:0",
        "output:0": "output:0",
    }


# check_meta_safe ------------------------------------------------------------------------------


def test_the_savers_own_ops_are_not_refused() -> None:
    meta = _meta()
    fetches = fetch_map(meta, _static("tf1_fused_cond", "ckpt").report.layers, ["output"])
    check_meta_safe(meta, fetches.values(), allow=False)  # raises when it refuses


def test_a_fetch_depending_on_the_save_op_is_refused() -> None:
    meta = _meta()
    # save/control_dependency is Identity(save/Const, ^save/SaveV2): running it writes files
    with pytest.raises(BnauditError) as raised:
        check_meta_safe(meta, ["output:0", "save/control_dependency:0"], allow=False)
    message = str(raised.value)
    assert "depend on the save op save/SaveV2" in message
    assert "--allow-unsafe-ops" in message and "\n" not in message
    check_meta_safe(meta, ["save/control_dependency:0"], allow=True)


def test_a_restore_op_depending_on_the_save_op_is_refused(tmp_path: Path) -> None:
    def restore_after_save(message: Any) -> None:
        node = next(n for n in message.graph_def.node if n.name == "save/restore_all")
        node.input.append("^save/SaveV2")

    meta = read_meta(_edited(tmp_path, restore_after_save))
    with pytest.raises(BnauditError, match="depend on the save op save/SaveV2"):
        check_meta_safe(meta, [], allow=False)


def test_an_unsafe_op_outside_the_saver_is_refused(tmp_path: Path) -> None:
    def read_file(message: Any) -> None:
        _string_const(message.graph_def, "model/path", str(tmp_path / "never.txt"))
        message.graph_def.node.add(name="model/read", op="ReadFile", input=["model/path"])

    meta = read_meta(_edited(tmp_path, read_file))
    with pytest.raises(BnauditError) as raised:
        check_meta_safe(meta, ["output:0"], allow=False)
    assert "ReadFile (" in str(raised.value) and "SaveV2" not in str(raised.value)
    check_meta_safe(meta, ["output:0"], allow=True)
