"""Run the frozen graph and a reference on the same feeds and reduce each fetched pair.

This is the only module importing TensorFlow (and Keras). The reference is a GraphDef (the
patched copy), a TF1 `.meta` restored from the checkpoint by its own Saver, or a `.keras`
model; it answers the frozen graph's tensor names through its `fetches` map.

Memory stays bounded by fetching in chunks: the tensors are grouped, in order, so that one
chunk's arrays fit `CHUNK_BYTES` (sizes from TensorFlow's static shapes once the
placeholders carry the fed shapes); each chunk is fetched from both graphs, reduced to a few
numbers and dropped before the next. The trade-off: every extra chunk runs both graphs once
more, so a small model runs once and a ResNet-50 at batch 32 a handful of times, instead of
holding every BN output (GBs) at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from bnaudit import protos
from bnaudit.errors import BnauditError

CHUNK_BYTES = 256 * 2**20
"""Budget for one chunk's arrays from one graph (both graphs' chunks are alive together)."""
_UNKNOWN_CHUNK = 8
"""Tensors per chunk when their sizes cannot be known before running."""

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
    def fetch(self, names: list[str]) -> list[NDArray[Any] | None]: ...

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

    graph, session = _session(tf, frozen)
    runners: list[_Runner] = [_GraphRunner(session, frozen)]
    try:
        runners.append(_open(tf, reference, progress))
        chunks = _chunks(graph, tensors)
        values: dict[str, T] = {}
        for number, chunk in enumerate(chunks, 1):
            arrays = []
            for runner, side in zip(runners, (frozen, reference), strict=True):
                where = f" (chunk {number}/{len(chunks)})" if len(chunks) > 1 else ""
                progress(f"running {side.label}{where}")
                arrays.append(runner.fetch(chunk))
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
        return _GraphRunner(_session(tf, side)[1], side)
    if isinstance(side, MetaSide):
        progress(f"restoring the checkpoint into {side.label}")
        return _MetaRunner(tf, side)
    progress(f"loading {side.label}")
    return _KerasRunner(side)


class _GraphRunner:
    def __init__(self, session: Any, side: Side) -> None:
        self.session, self.side = session, side

    def fetch(self, names: list[str]) -> list[NDArray[Any] | None]:
        return list(_fetch(self.session, self.side.label, self.side.feeds, names))

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
        return target in self.layers

    def _tensor(self, target: str) -> Any:
        if target.startswith("output:"):
            return self.model.outputs[int(target.split(":")[1])]
        return self.layers[target].output

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


def _chunks(graph: Any, tensors: list[str]) -> list[list[str]]:
    sizes: list[int | None] = []
    for name in tensors:
        try:
            tensor = graph.get_tensor_by_name(name)
        except (KeyError, ValueError) as error:
            raise BnauditError(f"the frozen graph has no tensor {name} ({error})") from None
        shape = tensor.shape
        known = shape.rank is not None and shape.is_fully_defined()
        sizes.append(int(np.prod(shape.as_list())) * tensor.dtype.size if known else None)
    if all(size is None for size in sizes):
        return [tensors[i : i + _UNKNOWN_CHUNK] for i in range(0, len(tensors), _UNKNOWN_CHUNK)]
    guess = max(size for size in sizes if size is not None)
    chunks: list[list[str]] = [[]]
    used = 0
    for name, size in zip(tensors, sizes, strict=True):
        size = guess if size is None else size
        if chunks[-1] and used + size > CHUNK_BYTES:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += size
    return chunks


def _fetch(
    session: Any, label: str, feeds: dict[str, NDArray[Any]], names: list[str]
) -> list[NDArray[Any]]:
    if not names:
        return []
    fed = {f"{name}:0": value for name, value in feeds.items()}
    try:
        results = session.run(names, fed)
    except Exception as error:  # OpError subclasses, or a fetch TensorFlow refuses
        raise BnauditError(
            f"TensorFlow cannot run the {label} ({_first_line(error)}); "
            "use --no-run for the static audit"
        ) from None
    return [np.asarray(r) for r in results]
