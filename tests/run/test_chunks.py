"""Cutting fetched tensors into chunks under a budget, and what each chunk carries to a later one.

Most tests use one small graph built here, whose sizes are known:

    x [2, 4] float32 (fed) -> a = concat(x, x)   [2, 8]: 64 bytes
                              b = sum(a, axis 1)  [2, 1]:  8 bytes
                              c = b * 2           [2, 1]:  8 bytes
                              d = a + c           [2, 8]: 64 bytes

`a` is read by `b` and by `d`, so a chunk boundary between them makes `a` a carried tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import MODELS

from bnaudit.errors import BnauditError
from bnaudit.run.chunks import ChunkBudget, Flow, cut, plan_carries
from bnaudit.run.sides import Side

A, B, C, D = "a:0", "b:0", "c:0", "d:0"
TENSORS = [A, B, C, D]


@pytest.fixture(scope="module")
def tf() -> Any:
    import tensorflow

    return tensorflow


def _chain(tf: Any, known_batch: bool = True) -> Any:
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2 if known_batch else None, 4], name="x")
        a = tf.concat([x, x], axis=1, name="a")
        b = tf.reduce_sum(a, axis=1, keepdims=True, name="b")
        c = tf.multiply(b, 2.0, name="c")
        tf.add(a, c, name="d")
    return graph


@pytest.fixture(scope="module")
def chain(tf: Any) -> Any:
    return _chain(tf)


SIDE = Side(None, {"x": np.zeros((2, 4), np.float32)}, "frozen graph")


def _flow(tf: Any, graph: Any, budget: ChunkBudget, tensors: list[str] = TENSORS) -> Flow:
    return Flow(tf, graph, SIDE, tensors, budget)


def test_flow_sizes_and_what_may_be_carried(tf: Any, chain: Any) -> None:
    flow = _flow(tf, chain, ChunkBudget())
    assert flow.size == {A: 64, B: 8, C: 8, D: 64}
    assert flow.fed == {"x"}
    # computed from the fed input and read by a later op; not the input, no constant, not `d`
    assert flow.carried == {"a": [A], "b": [B], "c": [C]}
    assert flow.consumers[A] == {"b", "d"} and flow.consumers[C] == {"d"}


@pytest.mark.parametrize(
    ("budget", "chunks"),
    [
        (10**6, [TENSORS]),
        (144, [TENSORS]),  # 64 + 8 + 8 + 64: everything at once, just fits
        (143, [[A, B, C], [D]]),
        # a, b, c and nothing more: `a`, alive until `d`, counts once, 64 + 8 + 8 = 80
        (80, [[A, B, C], [D]]),
        # one byte less: `c` starts a chunk; `d` cannot join it, as `a` (fed to it) and `b`
        # (fed to `c`) are held meanwhile: 8 + 64 + 64 + 8 > 79
        (79, [[A, B], [C], [D]]),
        (1, [[A], [B], [C], [D]]),  # a chunk always takes at least one tensor
    ],
)
def test_cut_by_bytes(tf: Any, chain: Any, budget: int, chunks: list[list[str]]) -> None:
    flow = _flow(tf, chain, ChunkBudget(bytes=budget))
    assert cut(flow, TENSORS) == chunks


@pytest.mark.parametrize(
    ("count", "chunks"),
    [(1, [[A], [B], [C], [D]]), (2, [[A, B], [C, D]]), (3, [[A, B, C], [D]]), (4, [TENSORS])],
)
def test_cut_by_tensor_count(tf: Any, chain: Any, count: int, chunks: list[list[str]]) -> None:
    flow = _flow(tf, chain, ChunkBudget(bytes=10**6, tensors=count))
    assert cut(flow, TENSORS) == chunks


def test_cut_of_nothing(tf: Any, chain: Any) -> None:
    assert cut(_flow(tf, chain, ChunkBudget(), []), []) == []


def test_a_chunk_too_big_alone_still_takes_its_tensor(tf: Any, chain: Any) -> None:
    flow = _flow(tf, chain, ChunkBudget(bytes=10), [D, B])
    assert cut(flow, [D, B]) == [[D], [B]]


def test_carries_are_fed_where_used_and_dropped_at_last_use(tf: Any, chain: Any) -> None:
    flow = _flow(tf, chain, ChunkBudget(bytes=10**6, tensors=1))
    chunks = [[A], [B], [C], [D]]
    plan = plan_carries(flow, chunks)
    assert plan.keep == [[A], [B], [C], []]
    assert plan.feed == [[], [A], [B], [A, C]]  # `c` does not read `a`: not fed to chunk 2
    assert plan.drop == [[], [], [B], [A, C]]  # `a` is held until `d`, its last reader


def test_tensors_computed_in_the_chunk_that_uses_them_are_not_carried(tf: Any, chain: Any) -> None:
    flow = _flow(tf, chain, ChunkBudget())
    plan = plan_carries(flow, [[A, B, C], [D]])
    assert plan.keep == [[A, C], []]  # `b` is read by `c` only, in the same chunk
    assert plan.feed == [[], [A, C]] and plan.drop == [[], [A, C]]


def test_the_largest_carry_is_left_out_when_a_chunk_overflows(tf: Any, chain: Any) -> None:
    """Chunk 3 would hold `a` (64) and `c` (8), fed to it, and `d` (64): 136 > 80. Without
    `a` it holds 72: `a` is computed again from the input there, `c` still carried."""
    flow = _flow(tf, chain, ChunkBudget(bytes=80))
    plan = plan_carries(flow, [[A], [B], [C], [D]])
    assert plan.keep == [[], [B], [C], []]
    assert plan.feed == [[], [], [B], [C]]
    assert plan.drop == [[], [], [B], [C]]


def test_nothing_is_carried_when_no_carry_fits(tf: Any, chain: Any) -> None:
    flow = _flow(tf, chain, ChunkBudget(bytes=8))
    plan = plan_carries(flow, [[A], [B], [C], [D]])
    assert plan.keep == plan.feed == plan.drop == [[], [], [], []]


def test_unknown_sizes_are_guessed_from_the_budget(tf: Any) -> None:
    flow = _flow(tf, _chain(tf, known_batch=False), ChunkBudget(bytes=800))
    assert flow.size == {A: 100, B: 100, C: 100, D: 100}  # an eighth of the budget each


def test_a_missing_tensor_is_refused(tf: Any, chain: Any) -> None:
    with pytest.raises(BnauditError, match="the frozen graph has no tensor e:0"):
        _flow(tf, chain, ChunkBudget(), [A, "e:0"])


def _imported(tf: Any, folder: str) -> Any:
    graph = tf.Graph()
    with graph.as_default():
        graph_def = tf.compat.v1.GraphDef.FromString((MODELS / folder / "frozen.pb").read_bytes())
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def test_a_graph_with_tf1_control_flow_carries_nothing(tf: Any) -> None:
    graph = _imported(tf, "tf1_fused_cond")
    assert {op.type for op in graph.get_operations()} >= {"Switch", "Merge"}
    tensors = ["model/bn1/cond/Merge:0", "model/bn2/cond/Merge:0", "output:0"]
    side = Side(None, {"input": np.zeros((2, 8, 8, 3), np.float32)}, "frozen graph")
    flow = Flow(tf, graph, side, tensors, ChunkBudget(tensors=1))
    assert flow.carried == {}
    chunks = cut(flow, tensors)
    assert chunks == [[t] for t in tensors]
    plan = plan_carries(flow, chunks)
    assert plan.keep == plan.feed == plan.drop == [[], [], []]


def test_a_graph_with_v2_control_flow_carries(tf: Any) -> None:
    """An `If` graph has no Switch/Merge: its chunks resume from the earlier layers."""
    graph = _imported(tf, "tf2_if_fused")
    tensors = ["model/bn1/cond:0", "model/bn2/cond:0", "output:0"]
    side = Side(None, {"input": np.zeros((2, 8, 8, 3), np.float32)}, "frozen graph")
    flow = Flow(tf, graph, side, tensors, ChunkBudget(tensors=1))
    assert flow.carried and all(op != "input" for op in flow.carried)
    plan = plan_carries(flow, cut(flow, tensors))
    assert plan.feed[0] == [] and plan.feed[1] and plan.feed[2]
    for number, fed in enumerate(plan.feed):
        for name in fed:  # fed only what an earlier chunk kept
            assert any(name in kept for kept in plan.keep[:number])
