"""Run two GraphDefs on the same feeds and reduce each fetched pair: the only TensorFlow import.

Memory stays bounded by fetching in chunks: the tensors are grouped, in order, so that one
chunk's arrays fit `CHUNK_BYTES` (sizes from TensorFlow's static shapes once the
placeholders carry the fed shapes); each chunk is fetched from both graphs, reduced to a few
numbers and dropped before the next. The trade-off: every extra chunk runs both graphs once
more, so a small model runs once and a ResNet-50 at batch 32 a handful of times, instead of
holding every BN output (GBs) at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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
class Reduced(Generic[T]):
    """The reduction of every fetched pair, by tensor name."""

    values: dict[str, T]
    chunks: int


def run_pair(
    frozen: Side,
    reference: Side,
    tensors: list[str],
    reduce: Callable[[NDArray[Any], NDArray[Any]], T],
    progress: Progress,
) -> Reduced[T]:
    """Fetch `tensors` (`node:index`) from both graphs in chunks; reduce each pair."""
    progress("loading TensorFlow…")
    tf = _import_tensorflow()

    sessions = [_session(tf, side) for side in (frozen, reference)]
    try:
        chunks = _chunks(sessions[0][0], tensors)
        values: dict[str, T] = {}
        for number, chunk in enumerate(chunks, 1):
            arrays = []
            for (_, session), side in zip(sessions, (frozen, reference), strict=True):
                where = f" (chunk {number}/{len(chunks)})" if len(chunks) > 1 else ""
                progress(f"running {side.label}{where}")
                arrays.append(_fetch(tf, session, side, chunk))
            for name, ours, theirs in zip(chunk, arrays[0], arrays[1], strict=True):
                values[name] = reduce(ours, theirs)
            del arrays
        return Reduced(values, len(chunks))
    finally:
        for _, session in sessions:
            session.close()


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


def _fetch(tf: Any, session: Any, side: Side, names: list[str]) -> list[NDArray[Any]]:
    feeds = {f"{name}:0": value for name, value in side.feeds.items()}
    try:
        results = session.run(names, feeds)
    except Exception as error:  # OpError subclasses, or a fetch TensorFlow refuses
        raise BnauditError(
            f"TensorFlow cannot run the {side.label} ({_first_line(error)}); "
            "use --no-run for the static audit"
        ) from None
    return [np.asarray(r) for r in results]
