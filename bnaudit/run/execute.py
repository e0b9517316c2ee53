"""Run the frozen graph and a reference on the same feeds and reduce each fetched pair.

This is the only module importing TensorFlow (and Keras). The reference is a GraphDef (the
patched copy), a TF1 `.meta` restored from the checkpoint by its own Saver, or a `.keras`
model; it answers the frozen graph's tensor names through its `fetches` map.

Memory stays bounded by fetching in chunks: the tensors are grouped, in order, each chunk
fetched from both graphs, reduced to a few numbers and dropped before the next. A chunk
after the first does not run its graph from the inputs again: it is fed the tensors it
consumes that an earlier chunk computed (the frontier), fetched with that earlier chunk and
carried until their last use. Constants are never carried (recomputing them costs nothing),
and a graph with TF1 control flow (`Switch`/`Merge`/`Enter`...), where a fed tensor may be a
dead branch's, carries nothing: each of its chunks runs from the inputs, as does any
consumer of a tensor TensorFlow cannot feed.

The budget, `CHUNK_BYTES` per graph (sizes from TensorFlow's static shapes once the
placeholders carry the fed shapes), counts everything held while a chunk runs: its fetched
tensors and every carried tensor alive then (fed to it, passing by it to a later chunk, or
fetched with it for a later one), each counted once. The frozen graph's tensors are cut into
chunks so that they fit; a chunk always takes at least one tensor. Where a graph's carries
would still overflow a chunk (one tensor too big, or the reference's graph differing from
the frozen one), the largest are not carried and the chunks that need them compute them
again from the inputs. Peak memory thus follows the widest point of the graph, not the
number of layers, and the graph runs once, in pieces, however many chunks there are. (A
`.meta` or `.keras` reference carries nothing: each of its chunks runs from the inputs.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from bnaudit.errors import BnauditError
from bnaudit.formats import protos

CHUNK_BYTES = 256 * 2**20
"""Budget for one chunk's arrays from one graph, carried tensors included (both graphs'
chunks are alive together)."""
_UNKNOWN_CHUNK = 8
"""Tensors per chunk when their sizes cannot be known before running."""
_CONTROL_FLOW = frozenset(
    {
        "Switch", "RefSwitch", "Merge", "RefMerge", "Enter", "RefEnter", "Exit", "RefExit",
        "NextIteration", "RefNextIteration", "LoopCond", "ControlTrigger",
    }
)  # fmt: skip

T = TypeVar("T")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Side:
    """One graph to run: its GraphDef (bnaudit's message class), feeds and a label."""

    graph_def: Any
    feeds: dict[str, NDArray[Any]]
    """Placeholder node name -> array."""
    label: str
    """How messages name it ("frozen graph", "reference")."""


@dataclass(frozen=True)
class MetaSide:
    """A TF1 training graph (`.meta`) restored from a checkpoint by its own Saver."""

    meta_graph: bytes
    """The serialized MetaGraphDef."""
    checkpoint: str
    """The prefix fed to the Saver's filename tensor."""
    restore_op: str
    filename_tensor: str
    feeds: dict[str, NDArray[Any]]
    """Placeholder node name -> array (training flags included, fed False)."""
    fetches: dict[str, str]
    """Frozen graph tensor -> this graph's tensor; tensors left out are not fetched."""
    label: str


@dataclass(frozen=True)
class KerasSide:
    """A Keras 3 `.keras` model, run in inference with its BN layers' outputs exposed."""

    path: Path
    inputs: list[str]
    """The frozen graph's data placeholders, matched to the model's inputs by name."""
    feeds: dict[str, NDArray[Any]]
    fetches: dict[str, str]
    """Frozen graph tensor -> a Keras layer name, or `output:K` for the model's K-th output;
    a layer the model lacks (or is no BatchNormalization) is not fetched."""
    outputs: int
    """How many final outputs the frozen graph has: paired by order only when equal."""
    label: str


Reference = Side | MetaSide | KerasSide


@dataclass(frozen=True)
class Reduced(Generic[T]):
    """The reduction of every fetched pair, by tensor name."""

    values: dict[str, T]
    """Only tensors both sides gave."""
    chunks: int


class _Runner(Protocol):
    def fetch_chunks(self, chunks: list[list[str]]) -> Iterator[list[NDArray[Any] | None]]:
        """Each chunk's arrays in turn, run when asked for (None: this side lacks it)."""
        ...

    def close(self) -> None: ...


def run_pair(
    frozen: Side,
    reference: Reference,
    tensors: list[str],
    reduce: Callable[[NDArray[Any], NDArray[Any]], T],
    progress: Progress,
) -> Reduced[T]:
    """Fetch `tensors` (`node:index` of the frozen graph) from both sides in chunks; reduce."""
    progress("loading TensorFlow…")
    tf = _import_tensorflow()

    first = _GraphRunner(tf, frozen)
    runners: list[_Runner] = [first]
    try:
        chunks = _cut(_Flow(tf, first.graph, frozen, tensors), tensors)
        runners.append(_open(tf, reference, progress))
        streams = [runner.fetch_chunks(chunks) for runner in runners]
        values: dict[str, T] = {}
        for number, chunk in enumerate(chunks, 1):
            arrays = []
            for stream, side in zip(streams, (frozen, reference), strict=True):
                where = f" (chunk {number}/{len(chunks)})" if len(chunks) > 1 else ""
                progress(f"running {side.label}{where}")
                arrays.append(next(stream))
            for name, ours, theirs in zip(chunk, arrays[0], arrays[1], strict=True):
                if ours is not None and theirs is not None:
                    values[name] = reduce(ours, theirs)
            del arrays
        return Reduced(values, len(chunks))
    finally:
        for runner in runners:
            runner.close()


def _open(tf: Any, side: Reference, progress: Progress) -> _Runner:
    if isinstance(side, Side):
        return _GraphRunner(tf, side)
    if isinstance(side, MetaSide):
        progress(f"restoring the checkpoint into {side.label}")
        return _MetaRunner(tf, side)
    progress(f"loading {side.label}")
    return _KerasRunner(side)


class _GraphRunner:
    """A GraphDef in a session; its chunks resume from the tensors carried to them."""

    def __init__(self, tf: Any, side: Side) -> None:
        self.tf, self.side = tf, side
        self.graph, self.session = _session(tf, side)

    def fetch_chunks(self, chunks: list[list[str]]) -> Iterator[list[NDArray[Any] | None]]:
        tensors = [name for chunk in chunks for name in chunk]
        plan = _plan(_Flow(self.tf, self.graph, self.side, tensors), chunks)
        kept: dict[str, NDArray[Any]] = {}
        for number, names in enumerate(chunks):
            # Yielded straight from the call: the chunk's arrays stay referenced by the caller
            # only, and are gone once it drops them.
            yield self._fetch(names, plan, number, kept)

    def _fetch(
        self, names: list[str], plan: _Plan, number: int, kept: dict[str, NDArray[Any]]
    ) -> list[NDArray[Any] | None]:
        extra = [name for name in plan.keep[number] if name not in names]
        carried = {name: kept[name] for name in plan.feed[number]}
        arrays = _fetch(self.session, self.side.label, self.side.feeds, names + extra, carried)
        got = dict(zip(names + extra, arrays, strict=True))
        kept.update((name, got[name]) for name in plan.keep[number])
        for name in plan.drop[number]:
            del kept[name]
        return list(arrays[: len(names)])

    def close(self) -> None:
        self.session.close()


class _MetaRunner:
    """Import a MetaGraphDef in a fresh graph and restore it with its own Saver's op."""

    def __init__(self, tf: Any, side: MetaSide) -> None:
        self.side = side
        graph = tf.Graph()
        with graph.as_default():
            try:
                meta_graph = tf.compat.v1.MetaGraphDef.FromString(side.meta_graph)
                tf.compat.v1.train.import_meta_graph(meta_graph, clear_devices=True)
            except Exception as error:  # ValueError, KeyError, OpError, ...
                raise BnauditError(
                    f"TensorFlow cannot import the {side.label} ({_first_line(error)}); "
                    "use --reference patched"
                ) from None
        self.session = tf.compat.v1.Session(graph=graph)
        try:
            self.session.run(side.restore_op, {side.filename_tensor: side.checkpoint})
        except Exception as error:
            self.session.close()
            raise BnauditError(
                f"TensorFlow cannot restore {side.checkpoint} into the {side.label} "
                f"({_first_line(error)}); use --reference patched"
            ) from None

    def fetch_chunks(self, chunks: list[list[str]]) -> Iterator[list[NDArray[Any] | None]]:
        return map(self.fetch, chunks)

    def fetch(self, names: list[str]) -> list[NDArray[Any] | None]:
        wanted = [self.side.fetches[n] for n in names if n in self.side.fetches]
        got = iter(_fetch(self.session, self.side.label, self.side.feeds, wanted))
        return [next(got) if n in self.side.fetches else None for n in names]

    def close(self) -> None:
        self.session.close()


class _KerasRunner:
    """A `.keras` model loaded in Keras' safe mode (it refuses to deserialize lambdas)."""

    def __init__(self, side: KerasSide) -> None:
        import keras

        self.side, self.keras = side, keras
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = keras.saving.load_model(side.path, compile=False, safe_mode=True)
        except Exception as error:  # ValueError (safe mode, config), OSError, TypeError, ...
            if "safe_mode" in str(error):
                raise BnauditError(
                    f"{side.path} holds Python code (a lambda), which bnaudit never loads: "
                    "deserializing it could run anything (Keras' safe mode); use "
                    "--reference patched"
                ) from None
            raise BnauditError(
                f"Keras cannot load {side.path} ({_first_line(error)}); use --reference patched"
            ) from None
        self.layers = {
            layer.name: layer
            for layer in self.model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
        }
        self.arrays = self._arrays()

    def _arrays(self) -> list[NDArray[Any]]:
        """The fed arrays in the order of the model's inputs (by name; one input: that one)."""
        names = [str(getattr(t, "name", "")).split(":")[0] for t in self.model.inputs]
        ours = self.side.inputs
        if len(names) == 1 and len(ours) == 1:
            return [self.side.feeds[ours[0]]]
        if sorted(names) != sorted(ours):
            raise BnauditError(
                f"the inputs of {self.side.path.name} ({', '.join(names)}) are not the frozen "
                f"graph's ({', '.join(ours)}); use --reference patched"
            )
        return [self.side.feeds[name] for name in names]

    def _available(self, name: str) -> bool:
        target = self.side.fetches.get(name)
        if target is None:
            return False
        if target.startswith("output:"):
            return self.side.outputs == len(self.model.outputs)
        if target not in self.layers:
            return False
        try:  # a layer called more than once has no single output
            self.layers[target].output  # noqa: B018
        except (AttributeError, ValueError):
            return False
        return True

    def _tensor(self, target: str) -> Any:
        if target.startswith("output:"):
            return self.model.outputs[int(target.split(":")[1])]
        return self.layers[target].output

    def fetch_chunks(self, chunks: list[list[str]]) -> Iterator[list[NDArray[Any] | None]]:
        return map(self.fetch, chunks)

    def fetch(self, names: list[str]) -> list[NDArray[Any] | None]:
        wanted = [n for n in names if self._available(n)]
        if not wanted:
            return [None] * len(names)
        keras = self.keras
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exposed = keras.Model(
                    self.model.inputs, [self._tensor(self.side.fetches[n]) for n in wanted]
                )
                results = exposed(self.arrays, training=False)
        except Exception as error:
            raise BnauditError(
                f"Keras cannot run the {self.side.label} ({_first_line(error)}); "
                "use --reference patched"
            ) from None
        if not isinstance(results, list | tuple):
            results = [results]
        got = dict(zip(wanted, (np.asarray(r) for r in results), strict=True))
        return [got.get(n) for n in names]

    def close(self) -> None:
        self.layers.clear()


def _import_tensorflow() -> Any:
    """TensorFlow, imported with the C++ start-up chatter kept off the user's stderr.

    TF_CPP_MIN_LOG_LEVEL does not silence what absl prints before it is initialised (oneDNN
    and CUDA notices), so the process's stderr descriptor points at /dev/null meanwhile.
    """
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tf


def _with_fed_shapes(side: Side) -> bytes:
    """The GraphDef's bytes, its placeholders declaring the shapes they will be fed."""
    graph_def = protos.GraphDef()
    graph_def.CopyFrom(side.graph_def)
    for node in graph_def.node:
        if node.name in side.feeds and node.op in ("Placeholder", "PlaceholderWithDefault"):
            shape = node.attr["shape"].shape
            shape.Clear()
            for size in side.feeds[node.name].shape:
                shape.dim.add(size=int(size))
    data: bytes = graph_def.SerializeToString()
    return data


def _first_line(error: Exception) -> str:
    """The telling line of a TensorFlow error (they start with "Graph execution error:")."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.endswith(":")] or lines
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _session(tf: Any, side: Side) -> tuple[Any, Any]:
    graph = tf.Graph()
    with graph.as_default():
        try:
            graph_def = tf.compat.v1.GraphDef.FromString(_with_fed_shapes(side))
            tf.graph_util.import_graph_def(graph_def, name="")
        except Exception as error:  # TensorFlow raises ValueError, OpError, KeyError, ...
            raise BnauditError(
                f"TensorFlow cannot import the {side.label} ({_first_line(error)}); "
                "use --no-run for the static audit"
            ) from None
    return graph, tf.compat.v1.Session(graph=graph)


class _Flow:
    """One graph's ops as chunks see them: what each fetched tensor needs, what may be carried."""

    def __init__(self, tf: Any, graph: Any, side: Side, tensors: list[str]) -> None:
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
        guess = max(known) if known else max(1, CHUNK_BYTES // _UNKNOWN_CHUNK)
        self.size = {name: guess if size is None else size for name, size in sizes.items()}

    def nbytes(self, names: Iterable[str]) -> int:
        return sum(self.size[name] for name in names)


class _Chunking:
    """A graph's ops put in chunks in order, each computed by the first chunk needing it."""

    def __init__(self, flow: _Flow) -> None:
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


def _cut(flow: _Flow, tensors: list[str]) -> list[list[str]]:
    """`tensors` in order, in chunks that fit `CHUNK_BYTES` with what this graph carries."""
    chunking = _Chunking(flow)
    chunks: list[list[str]] = [[]]
    for name in tensors:
        ops = chunking.new_ops(name)
        if chunks[-1] and flow.nbytes({*chunks[-1], name} | chunking.alive(ops)) > CHUNK_BYTES:
            chunking.start_next()
            chunks.append([])
        chunking.take(ops)
        chunks[-1].append(name)
    return chunks if tensors else []


@dataclass(frozen=True)
class _Plan:
    """What one graph carries from chunk to chunk (lists indexed by chunk)."""

    keep: list[list[str]]
    """Tensors the chunk computes (and fetches) for a later chunk."""
    feed: list[list[str]]
    """Tensors the chunk is fed instead of computing them again."""
    drop: list[list[str]]
    """Carried tensors no later chunk needs."""


def _plan(flow: _Flow, chunks: list[list[str]]) -> _Plan:
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
            if not spare or flow.nbytes(alive | set(chunk)) <= CHUNK_BYTES:
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
    return _Plan(keep, feed, drop)


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


def _fetch(
    session: Any,
    label: str,
    feeds: dict[str, NDArray[Any]],
    names: list[str],
    carried: dict[str, NDArray[Any]] | None = None,
) -> list[NDArray[Any]]:
    """`names` from one run fed the placeholders' arrays and any carried tensors."""
    if not names:
        return []
    fed: dict[str, NDArray[Any]] = {f"{name}:0": value for name, value in feeds.items()}
    fed.update(carried or {})
    try:
        results = session.run(names, fed)
    except Exception as error:  # OpError subclasses, or a fetch TensorFlow refuses
        raise BnauditError(
            f"TensorFlow cannot run the {label} ({_first_line(error)}); "
            "use --no-run for the static audit"
        ) from None
    return [np.asarray(r) for r in results]
