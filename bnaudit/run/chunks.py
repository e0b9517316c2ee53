"""Cut the tensors a run fetches into chunks that fit a memory budget, and plan what each
graph carries from one chunk to a later one.

Memory stays bounded by fetching in chunks: the tensors are grouped, in order, each chunk
fetched from both graphs, reduced to a few numbers and dropped before the next. A chunk
after the first does not run its graph from the inputs again: it is fed the tensors it
consumes that an earlier chunk computed (the frontier), fetched with that earlier chunk and
carried until their last use. Constants are never carried (recomputing them costs nothing),
and a graph with TF1 control flow (`Switch`/`Merge`/`Enter`...), where a fed tensor may be a
dead branch's, carries nothing: each of its chunks runs from the inputs, as does any
consumer of a tensor TensorFlow cannot feed.

The budget (`ChunkBudget.bytes` per graph; sizes from TensorFlow's static shapes once the
placeholders carry the fed shapes) counts everything held while a chunk runs: its fetched
tensors and every carried tensor alive then (fed to it, passing by it to a later chunk, or
fetched with it for a later one), each counted once. The frozen graph's tensors are cut into
chunks so that they fit; a chunk always takes at least one tensor. Where a graph's carries
would still overflow a chunk (one tensor too big, or the reference's graph differing from
the frozen one), the largest are not carried and the chunks that need them compute them
again from the inputs. Peak memory thus follows the widest point of the graph, not the
number of layers, and the graph runs once, in pieces, however many chunks there are.

Works on an imported `tf.Graph` handed in by `execute`; TensorFlow is never imported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnaudit.errors import BnauditError
from bnaudit.run.sides import Side

DEFAULT_CHUNK_BYTES = 256 * 2**20
"""Budget for one chunk's arrays from one graph, carried tensors included (both graphs'
chunks are alive together)."""


@dataclass(frozen=True)
class ChunkBudget:
    """How much one chunk of one graph may hold."""

    bytes: int = DEFAULT_CHUNK_BYTES
    """Fetched and carried tensors alive while the chunk runs, by their static sizes."""
    tensors: int | None = None
    """At most this many fetched tensors a chunk; None: as many as fit `bytes`."""


_UNKNOWN_CHUNK = 8
"""Tensors per chunk when their sizes cannot be known before running."""
_CONTROL_FLOW = frozenset(
    {
        "Switch", "RefSwitch", "Merge", "RefMerge", "Enter", "RefEnter", "Exit", "RefExit",
        "NextIteration", "RefNextIteration", "LoopCond", "ControlTrigger",
    }
)  # fmt: skip


class Flow:
    """One graph's ops as chunks see them: what each fetched tensor needs, what may be carried."""

    def __init__(
        self, tf: Any, graph: Any, side: Side, tensors: list[str], budget: ChunkBudget
    ) -> None:
        self.budget = budget
        ops = graph.get_operations()
        self.inputs: dict[str, list[str]] = {op.name: [t.name for t in op.inputs] for op in ops}
        self.before: dict[str, list[str]] = {
            op.name: [t.op.name for t in op.inputs] + [c.name for c in op.control_inputs]
            for op in ops
        }
        self.fed = {name for name in side.feeds if name in self.before}
        for name in tensors:
            try:
                graph.get_tensor_by_name(name)
            except (KeyError, ValueError) as error:
                raise BnauditError(f"the {side.label} has no tensor {name} ({error})") from None
        needed = _reach({_op(name) for name in tensors}, self.before, self.fed)
        self.consumers: dict[str, set[str]] = {}
        """Tensor -> the ops consuming it that some fetched tensor needs."""
        for op in needed:
            for name in self.inputs[op]:
                self.consumers.setdefault(name, set()).add(op)
        self.carried: dict[str, list[str]] = {}
        """Op -> its outputs a later chunk may be fed: computed from the fed inputs, feedable."""
        if not any(op.type in _CONTROL_FLOW for op in ops):
            after: dict[str, list[str]] = {}
            for op in needed:
                for earlier in self.before[op]:
                    after.setdefault(earlier, []).append(op)
            varying = _reach(self.fed, after, set()) - self.fed
            unfeedable = (tf.resource, tf.variant)
            for name in sorted(self.consumers):
                tensor = graph.get_tensor_by_name(name)
                if tensor.op.name not in varying or tensor.dtype in unfeedable:
                    continue
                if graph.is_feedable(tensor):
                    self.carried.setdefault(tensor.op.name, []).append(name)
        sizes = {name: _nbytes(graph.get_tensor_by_name(name)) for name in tensors}
        sizes.update(
            (name, _nbytes(graph.get_tensor_by_name(name)))
            for names in self.carried.values()
            for name in names
        )
        known = [size for name in tensors if (size := sizes[name]) is not None]
        guess = max(known) if known else max(1, budget.bytes // _UNKNOWN_CHUNK)
        self.size = {name: guess if size is None else size for name, size in sizes.items()}

    def nbytes(self, names: Iterable[str]) -> int:
        return sum(self.size[name] for name in names)


class _Chunking:
    """A graph's ops put in chunks in order, each computed by the first chunk needing it."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.number = 0
        self.chunk_of: dict[str, int] = {}
        self.waiting: dict[str, int] = {}
        """Carried tensor -> how many of its consumers no chunk has taken yet."""
        self.entering: set[str] = set()
        """The carried tensors an earlier chunk computed for this one or a later one."""

    def new_ops(self, name: str) -> set[str]:
        """The ops fetching `name` needs that no chunk computes yet."""
        found: set[str] = set()
        stack = [_op(name)]
        while stack:
            op = stack.pop()
            if op not in found and op not in self.chunk_of and op not in self.flow.fed:
                found.add(op)
                stack.extend(self.flow.before[op])
        return found

    def alive(self, ops: set[str]) -> set[str]:
        """The carried tensors held while this chunk runs, were it to compute `ops` too."""
        consumers, alive = self.flow.consumers, set(self.entering)
        alive.update(t for t, left in self.waiting.items() if left > len(consumers[t] & ops))
        alive.update(
            name
            for op in ops
            for name in self.flow.carried.get(op, ())
            if any(c not in ops and c not in self.chunk_of for c in consumers[name])
        )
        return alive

    def take(self, ops: set[str]) -> None:
        for op in ops:
            self.chunk_of[op] = self.number
            for name in self.flow.carried.get(op, ()):
                self.waiting[name] = len(self.flow.consumers[name])
        for op in ops:
            for name in set(self.flow.inputs[op]) & self.waiting.keys():
                self.waiting[name] -= 1
                if not self.waiting[name]:
                    del self.waiting[name]

    def start_next(self) -> None:
        self.number += 1
        self.entering = set(self.waiting)


def cut(flow: Flow, tensors: list[str]) -> list[list[str]]:
    """`tensors` in order, in chunks that fit the budget with what this graph carries."""
    chunking = _Chunking(flow)
    chunks: list[list[str]] = [[]]
    for name in tensors:
        ops = chunking.new_ops(name)
        if chunks[-1] and _overflows(flow, [*chunks[-1], name], chunking.alive(ops)):
            chunking.start_next()
            chunks.append([])
        chunking.take(ops)
        chunks[-1].append(name)
    return chunks if tensors else []


def _overflows(flow: Flow, chunk: list[str], alive: set[str]) -> bool:
    """True when `chunk`, with the carried tensors alive meanwhile, exceeds the budget."""
    budget = flow.budget
    if budget.tensors is not None and len(chunk) > budget.tensors:
        return True
    return flow.nbytes(set(chunk) | alive) > budget.bytes


@dataclass(frozen=True)
class CarryPlan:
    """What one graph carries from chunk to chunk (lists indexed by chunk)."""

    keep: list[list[str]]
    """Tensors the chunk computes (and fetches) for a later chunk."""
    feed: list[list[str]]
    """Tensors the chunk is fed instead of computing them again."""
    drop: list[list[str]]
    """Carried tensors no later chunk needs."""


def plan_carries(flow: Flow, chunks: list[list[str]]) -> CarryPlan:
    """The carries of `chunks` in this graph, the largest left out where a chunk overflows."""
    chunking = _Chunking(flow)
    for number, chunk in enumerate(chunks):
        if number:
            chunking.start_next()
        for name in chunk:
            chunking.take(chunking.new_ops(name))
    chunk_of = chunking.chunk_of
    uses: dict[str, tuple[int, list[int]]] = {}
    """Carried tensor -> the chunk computing it, the later chunks consuming it."""
    for op, names in flow.carried.items():
        for name in names:
            later = sorted({chunk_of[c] for c in flow.consumers[name]} - {chunk_of[op]})
            if later:
                uses[name] = (chunk_of[op], later)
    for number, chunk in enumerate(chunks):
        while True:
            alive = {t for t, (made, later) in uses.items() if made <= number <= later[-1]}
            spare = sorted(alive - set(chunk))
            if not spare or flow.nbytes(alive | set(chunk)) <= flow.budget.bytes:
                break
            del uses[max(spare, key=lambda t: (flow.size[t], uses[t][1][-1]))]
    keep: list[list[str]] = [[] for _ in chunks]
    feed: list[list[str]] = [[] for _ in chunks]
    drop: list[list[str]] = [[] for _ in chunks]
    for name, (made, later) in sorted(uses.items()):
        keep[made].append(name)
        for number in later:
            feed[number].append(name)
        drop[later[-1]].append(name)
    return CarryPlan(keep, feed, drop)


def _reach(start: Iterable[str], edges: dict[str, list[str]], stop: set[str]) -> set[str]:
    """The ops reached from `start` along `edges`, not going through (or into) `stop`."""
    seen: set[str] = set()
    stack = list(start)
    while stack:
        op = stack.pop()
        if op not in seen and op not in stop:
            seen.add(op)
            stack.extend(edges.get(op, ()))
    return seen


def _op(tensor: str) -> str:
    return tensor.rsplit(":", 1)[0]


def _nbytes(tensor: Any) -> int | None:
    shape = tensor.shape
    if shape.rank is None or not shape.is_fully_defined():
        return None
    return int(np.prod(shape.as_list())) * int(tensor.dtype.size)
