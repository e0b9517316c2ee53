"""Inputs: shapes from placeholders, seeded random data, the user's arrays, switches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.run.inputs import (
    InputOptions,
    load_arrays,
    make_inputs,
    parse_shape,
    placeholders,
    save_arrays,
)


def _graph() -> object:
    graph_def = protos.GraphDef()
    x = graph_def.node.add(name="input", op="Placeholder")
    x.attr["dtype"].type = 1
    for size in (-1, 8, 8, 3):
        x.attr["shape"].shape.dim.add(size=size)
    flag = graph_def.node.add(name="is_training", op="Placeholder")
    flag.attr["dtype"].type = 10
    flag.attr["shape"].shape.SetInParent()
    keep = graph_def.node.add(name="keep_prob", op="PlaceholderWithDefault", input=["one"])
    keep.attr["dtype"].type = 1
    keep.attr["shape"].shape.SetInParent()
    graph_def.node.add(name="y", op="IdentityN", input=["input", "is_training", "keep_prob"])
    return graph_def


def test_random_inputs_are_seeded_batched_and_distinct() -> None:
    found = placeholders(_graph())
    first = make_inputs(found, {"is_training"}, InputOptions(seed=3))
    again = make_inputs(found, {"is_training"}, InputOptions(seed=3))
    other = make_inputs(found, {"is_training"}, InputOptions(seed=4))
    x = first.arrays["input"]
    assert x.shape == (2, 8, 8, 3) and x.dtype == np.float32
    assert not np.array_equal(x[0], x[1])
    assert np.array_equal(x, again.arrays["input"])
    assert not np.array_equal(x, other.arrays["input"])
    assert set(first.arrays) == {"input"}  # keep_prob keeps its default


def test_flag_without_default_is_fed_false_with_a_warning_or_what_feed_says() -> None:
    found = placeholders(_graph())
    plain = make_inputs(found, {"is_training"}, InputOptions())
    assert plain.switches["is_training"].item() is False
    assert "--feed is_training=true" in plain.warnings[0]
    fed = make_inputs(found, {"is_training"}, InputOptions(feeds={"is_training": "true"}))
    assert fed.switches["is_training"].item() is True and fed.warnings == ()


def test_shape_and_batch_options() -> None:
    found = placeholders(_graph())
    assert make_inputs(found, set(), InputOptions(batch=5)).arrays["input"].shape == (5, 8, 8, 3)
    shapes = {"input": (3, 8, 8, 3)}
    assert make_inputs(found, set(), InputOptions(shapes=shapes)).arrays["input"].shape[0] == 3
    with pytest.raises(BnauditError, match="does not fit"):
        make_inputs(found, set(), InputOptions(shapes={"input": (1, 9, 9, 3)}))
    with pytest.raises(BnauditError, match="not a placeholder"):
        make_inputs(found, set(), InputOptions(shapes={"nope": (1,)}))
    assert parse_shape("input:0=1,8,8,3") == ("input", (1, 8, 8, 3))
    with pytest.raises(ValueError, match="--shape"):
        parse_shape("input=a,b")


def test_saved_inputs_replay_identically(tmp_path: Path) -> None:
    found = placeholders(_graph())
    made = make_inputs(found, set(), InputOptions(seed=7))
    save_arrays(tmp_path / "in.npz", made.arrays)
    replay = make_inputs(found, set(), InputOptions(arrays=load_arrays([], tmp_path / "in.npz")))
    assert np.array_equal(replay.arrays["input"], made.arrays["input"])
    np.save(tmp_path / "x.npy", np.ones((1, 8, 8, 3)))
    given = load_arrays([("input", tmp_path / "x.npy")], None)
    assert make_inputs(found, set(), InputOptions(arrays=given)).arrays["input"].dtype == np.float32
    with pytest.raises(BnauditError, match="shape"):
        make_inputs(found, set(), InputOptions(arrays={"input": np.ones((2, 3))}))


def test_placeholders_nothing_reads_are_not_inputs() -> None:
    from bnaudit.formats import protos
    from bnaudit.run.inputs import placeholders

    graph = protos.GraphDef()
    used = graph.node.add(name="x", op="Placeholder")
    used.attr["dtype"].type = 1
    graph.node.add(name="unused_control_flow_input", op="Placeholder").attr["dtype"].type = 1
    graph.node.add(name="y", op="Identity", input=["x"])
    assert [p.name for p in placeholders(graph)] == ["x"]
