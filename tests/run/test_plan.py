"""Planning a run without running it: rows, outputs, tensors, the reference, what is refused."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS

from bnaudit.audit.compare import StaticAudit, audit
from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.model.graph import index_graph
from bnaudit.model.graphdef import read_graph_def
from bnaudit.run.inputs import InputOptions, Inputs
from bnaudit.run.options import RunOptions
from bnaudit.run.plan import final_outputs, plan_run, true_flags
from bnaudit.run.sides import KerasSide, MetaSide, Side


@cache
def _static(folder: str, checkpoint: str) -> StaticAudit:
    graph = MODELS / folder / "frozen.pb"
    if not graph.exists():
        graph = MODELS / folder / "folded.pb"
    return audit(MODELS / folder / checkpoint, graph)


def test_plan_rows_outputs_and_tensors_in_order() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    plan = plan_run(static, RunOptions(reference="patched"))
    assert plan.rows == static.report.layers
    assert plan.outputs == ("output",)
    # Each layer's input, then its output (numpy measures what the layer does itself).
    assert plan.tensors == (
        "model/conv1/BiasAdd:0",
        "model/bn1/cond/Merge:0",
        "model/conv2/BiasAdd:0",
        "model/bn2/cond/Merge:0",
        "output:0",
    )
    assert plan.layer_inputs == {
        "model/bn1/cond/Merge:0": "model/conv1/BiasAdd:0",
        "model/bn2/cond/Merge:0": "model/conv2/BiasAdd:0",
    }
    assert plan.maths.keys() == plan.layer_inputs.keys()
    assert plan.choice.kind == "patched"
    assert plan.inputs.arrays.keys() == {"input"}
    assert plan.inputs.arrays["input"].shape == (2, 8, 8, 3)  # the default batch of 2
    assert plan.frozen.graph_def is static.graph.graph_def
    assert plan.frozen.label == "frozen graph"
    assert plan.frozen.feeds.keys() == {"input"}
    assert isinstance(plan.reference, Side)
    assert plan.reference.graph_def is not static.graph.graph_def
    assert plan.reference.feeds["input"] is plan.frozen.feeds["input"]  # the same data in both
    assert plan.notes == (
        "the frozen graph with the checkpoint's BN values, in inference mode "
        "(is_training forced False)",
    )


def test_fed_switches_go_to_the_frozen_graph_only() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    options = RunOptions(reference="patched", inputs=InputOptions(feeds={"is_training": "1"}))
    plan = plan_run(static, options)
    assert plan.frozen.feeds.keys() == {"input", "is_training"}
    assert bool(plan.frozen.feeds["is_training"])
    assert plan.reference.feeds.keys() == {"input"}  # type: ignore[union-attr]
    assert true_flags(plan.inputs) == {"is_training"}


@pytest.mark.parametrize(
    ("folder", "checkpoint", "reference", "kind", "side"),
    [
        ("tf1_fused_cond", "ckpt", "auto", "meta", MetaSide),
        ("tf1_fused_cond", "ckpt", "meta", "meta", MetaSide),
        ("tf1_fused_cond", "ckpt", "patched", "patched", Side),
        ("keras3_bn", "model.keras", "auto", "keras", KerasSide),
        ("keras3_bn", "model.weights.h5", "auto", "patched", Side),
        ("tf1_trainable_only_saver", "ckpt", "auto", "patched", Side),
    ],
)
def test_plan_uses_the_chosen_reference(
    folder: str, checkpoint: str, reference: str, kind: str, side: type
) -> None:
    static = _static(folder, checkpoint)
    plan = plan_run(static, RunOptions(reference=reference))  # type: ignore[arg-type]
    assert plan.choice.kind == kind
    assert type(plan.reference) is side
    assert plan.choice.reason.startswith("auto: ") == (reference == "auto")


def test_plan_refuses_a_reference_the_checkpoint_cannot_give() -> None:
    with pytest.raises(BnauditError, match=r"--reference keras needs a \.keras model"):
        plan_run(_static("tf1_fused_cond", "ckpt"), RunOptions(reference="keras"))


def test_keras_outputs_are_compared_too() -> None:
    plan = plan_run(_static("keras3_bn", "model.keras"), RunOptions())
    assert plan.outputs == ("Identity",)
    assert plan.tensors == (
        "functional_1/conv1_1/BiasAdd:0",
        "functional_1/bn1_1/batchnorm/add_1:0",
        "functional_1/conv2_1/BiasAdd:0",
        "functional_1/bn2_1/batchnorm/add_1:0",
        "Identity:0",
    )
    # the .keras model gives each BN layer's input by the layer's name
    assert isinstance(plan.reference, KerasSide)
    assert plan.reference.fetches["functional_1/conv1_1/BiasAdd:0"] == "input:bn1"
    assert plan.reference.fetches["functional_1/bn2_1/batchnorm/add_1:0"] == "bn2"


def test_folds_are_compared_when_the_checkpoint_refolds_them() -> None:
    static = _static("tf1_folded_stale", "ckpt")
    plan = plan_run(static, RunOptions(reference="patched"))
    assert [row.scope for row in plan.rows] == ["model/bn1", "model/bn2"]
    assert plan.tensors == (
        "model/bn1/FusedBatchNormV3:0",
        "model/bn2/FusedBatchNormV3:0",
        "output:0",
    )
    assert plan.notes == (
        "the frozen graph with the checkpoint's BN values, in inference mode; "
        "2 folded BN folded again from it",
    )


def test_a_fold_the_checkpoint_cannot_redo_is_left_out_of_a_patched_run() -> None:
    """`StaticAudit.folded` lists the folds the checkpoint can refold; bn1 is not among them
    (as when the checkpoint lacks its kernel)."""
    full = _static("tf1_folded_stale", "ckpt")
    static = dataclasses.replace(full, folded=full.folded[1:])
    plan = plan_run(static, RunOptions(reference="patched"))
    assert [row.scope for row in plan.rows] == ["model/bn2"]
    assert plan.tensors == ("model/bn2/FusedBatchNormV3:0", "output:0")
    assert plan.notes == (
        "the frozen graph with the checkpoint's BN values, in inference mode; "
        "1 folded BN folded again from it",
        "model/bn1: folded, and the checkpoint lacks the kernel or statistics to fold it "
        "again: its activation is not compared",
    )
    # a meta reference runs the unfolded training graph: every fold is compared
    meta = plan_run(static, RunOptions(reference="meta"))
    assert [row.scope for row in meta.rows] == ["model/bn1", "model/bn2"]
    assert not any("not compared" in note for note in meta.notes)


def test_a_layer_output_that_is_also_a_final_output_is_fetched_once() -> None:
    static = _static("tf1_fused_cond", "ckpt")
    bn1, bn2 = static.report.layers
    last = dataclasses.replace(bn2, name="output")  # as if the graph ended at its last BN
    report = dataclasses.replace(static.report, layers=(bn1, last, bn1))
    plan = plan_run(dataclasses.replace(static, report=report), RunOptions(reference="patched"))
    assert plan.outputs == ()
    # "output" is no layer detection found, so no input of it is fetched
    assert plan.tensors == ("model/conv1/BiasAdd:0", "model/bn1/cond/Merge:0", "output:0")


def _with_read_file(tmp_path: Path) -> Path:
    graph_def = read_graph_def(MODELS / "tf1_fused_cond" / "frozen.pb")
    name = graph_def.node.add(name="plan_test/filename", op="Const")
    name.attr["dtype"].type = protos.DATA_TYPES["DT_STRING"]
    name.attr["value"].tensor.dtype = protos.DATA_TYPES["DT_STRING"]
    name.attr["value"].tensor.string_val.append(str(tmp_path / "never.txt").encode())
    graph_def.node.add(name="plan_test/read", op="ReadFile", input=["plan_test/filename"])
    path = tmp_path / "unsafe.pb"
    path.write_bytes(graph_def.SerializeToString())
    return path


def test_an_unsafe_graph_is_refused_unless_allowed(tmp_path: Path) -> None:
    static = audit(MODELS / "tf1_fused_cond" / "ckpt", _with_read_file(tmp_path))
    with pytest.raises(BnauditError) as raised:
        plan_run(static, RunOptions(reference="patched"))
    assert "ReadFile" in str(raised.value) and "--allow-unsafe-ops" in str(raised.value)
    plan = plan_run(static, RunOptions(reference="patched", allow_unsafe_ops=True))
    # the read computes from no input (a constant file name): it is no final output
    assert plan.outputs == ("output",)


# final_outputs ----------------------------------------------------------------------------------


def _node(graph_def: object, name: str, op: str, *inputs: str) -> None:
    graph_def.node.add(name=name, op=op, input=list(inputs))  # type: ignore[attr-defined]


def test_final_outputs_are_unconsumed_nodes_reached_from_an_input_in_graph_order() -> None:
    graph_def = protos.GraphDef()
    _node(graph_def, "tail", "Identity", "x", "^side")  # first in the file, last in the graph
    _node(graph_def, "out_b", "Identity", "a")
    _node(graph_def, "x", "Placeholder")
    _node(graph_def, "k", "PlaceholderWithDefault", "c")
    _node(graph_def, "c", "Const")
    _node(graph_def, "a", "AddV2", "x", "c")
    _node(graph_def, "out_a", "Neg", "a:0")
    _node(graph_def, "from_k", "Relu", "k")  # a PlaceholderWithDefault is an input too
    _node(graph_def, "lone", "Neg", "c")  # computes from no input: constant
    _node(graph_def, "guard", "Assert", "a")  # produces nothing a user reads
    _node(graph_def, "done", "NoOp", "^guard")
    _node(graph_def, "side", "Relu", "a")  # consumed, through a control input
    graph = index_graph(Path("hand.pb"), graph_def)
    outputs = final_outputs(graph)
    # topological order, the file's breaking ties: `tail` waits for `side`, so comes last
    assert outputs == ["from_k", "out_b", "out_a", "tail"]
    assert [graph.order[n] for n in outputs] == sorted(graph.order[n] for n in outputs)


def test_final_outputs_of_fixtures() -> None:
    assert final_outputs(_static("tf1_fused_cond", "ckpt").graph) == ["output"]
    assert final_outputs(_static("keras3_bn", "model.keras").graph) == ["Identity"]


# true_flags -----------------------------------------------------------------------------------


def test_true_flags_are_the_switches_fed_true() -> None:
    inputs = Inputs(
        arrays={"input": np.ones((2, 3), bool)},  # data, not a switch
        switches={
            "is_training": np.asarray(True),
            "dropout": np.asarray(False),
            "all_true": np.array([True, True]),
            "mixed": np.array([True, False]),
        },
        warnings=(),
    )
    assert true_flags(inputs) == {"is_training", "all_true"}
    assert true_flags(Inputs({}, {}, ())) == set()
