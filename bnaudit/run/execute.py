"""Run the frozen graph and its reference on the same feeds, chunk by chunk, and reduce each
fetched pair to a few numbers before the next chunk runs.

The only module importing TensorFlow (and Keras). `chunks` decides how the fetched tensors
are cut and what each graph carries between chunks; `sides` describes what runs. A `.meta` or
`.keras` reference carries nothing: each of its chunks runs from the inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from bnaudit.errors import BnauditError
from bnaudit.formats import protos
from bnaudit.run.chunks import CarryPlan, ChunkBudget, Flow, cut, plan_carries
from bnaudit.run.sides import KerasSide, MetaSide, Reference, Side

T = TypeVar("T")
Step = Callable[[str], None]
"""Says what the run is doing now (a progress line)."""


@dataclass(frozen=True)
class Reduced(Generic[T]):
    """The reduction of every fetched pair, by tensor name."""

    values: dict[str, T]
    """Only tensors both sides gave."""
    chunks: int
    """How many chunks each side ran."""
    carried: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Side label -> the tensors its chunks were fed from earlier chunks instead of
    recomputing them (empty for a side that runs each chunk from the inputs)."""


class _Runner(Protocol):
    carried: list[str]

    def fetch_chunks(self, chunks: list[list[str]]) -> Iterator[list[NDArray[Any] | None]]:
        """Each chunk's arrays in turn, run when asked for (None: this side lacks it)."""
        ...

    def close(self) -> None: ...


def run_pair(
    frozen: Side,
    reference: Reference,
    tensors: list[str],
    reduce: Callable[[str, NDArray[Any], NDArray[Any]], T],
    step: Step,
    budget: ChunkBudget | None = None,
) -> Reduced[T]:
    """Fetch `tensors` (`node:index` of the frozen graph) from both sides in chunks, in
    order; reduce each pair (with its name) as it arrives."""
    budget = budget or ChunkBudget()
    step("loading TensorFlow…")
    tf = import_tensorflow()

    first = _GraphRunner(tf, frozen, budget)
    runners: list[_Runner] = [first]
    try:
        chunks = cut(Flow(tf, first.graph, frozen, tensors, budget), tensors)
        runners.append(_open(tf, reference, step, budget))
        streams = [runner.fetch_chunks(chunks) for runner in runners]
        values: dict[str, T] = {}
        for number, chunk in enumerate(chunks, 1):
            arrays = []
            for stream, side in zip(streams, (frozen, reference), strict=True):
                where = f" (chunk {number}/{len(chunks)})" if len(chunks) > 1 else ""
                step(f"running {side.label}{where}")
                arrays.append(next(stream))
            for name, ours, theirs in zip(chunk, arrays[0], arrays[1], strict=True):
                if ours is not None and theirs is not None:
                    values[name] = reduce(name, ours, theirs)
            del arrays
        carried = {
            side.label: tuple(runner.carried)
            for side, runner in zip((frozen, reference), runners, strict=True)
        }
        return Reduced(values, len(chunks), carried)
    finally:
        for runner in runners:
            runner.close()


def _open(tf: Any, side: Reference, step: Step, budget: ChunkBudget) -> _Runner:
    if isinstance(side, Side):
        return _GraphRunner(tf, side, budget)
    if isinstance(side, MetaSide):
        step(f"restoring the checkpoint into {side.label}")
        return _MetaRunner(tf, side)
    step(f"loading {side.label}")
    return _KerasRunner(side)


class _GraphRunner:
    """A GraphDef in a session; its chunks resume from the tensors carried to them."""

    def __init__(self, tf: Any, side: Side, budget: ChunkBudget) -> None:
        self.tf, self.side, self.budget = tf, side, budget
        self.graph, self.session = _session(tf, side)
        self.carried: list[str] = []

    def fetch_chunks(self, chunks: list[list[str]]) -> Iterator[list[NDArray[Any] | None]]:
        tensors = [name for chunk in chunks for name in chunk]
        plan = plan_carries(Flow(self.tf, self.graph, self.side, tensors, self.budget), chunks)
        kept: dict[str, NDArray[Any]] = {}
        for number, names in enumerate(chunks):
            # Yielded straight from the call: the chunk's arrays stay referenced by the caller
            # only, and are gone once it drops them.
            yield self._fetch(names, plan, number, kept)

    def _fetch(
        self, names: list[str], plan: CarryPlan, number: int, kept: dict[str, NDArray[Any]]
    ) -> list[NDArray[Any] | None]:
        extra = [name for name in plan.keep[number] if name not in names]
        carried = {name: kept[name] for name in plan.feed[number]}
        self.carried += carried
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
        self.carried: list[str] = []
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
        self.session = tf.compat.v1.Session(graph=graph, config=session_config(tf))
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

        self.carried: list[str] = []
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
        try:  # a layer called more than once has no single output (nor input)
            self._tensor(target)
        except (AttributeError, ValueError, KeyError):
            return False
        return True

    def _tensor(self, target: str) -> Any:
        """`output:K`, a BN layer's output by name, or `input:NAME`, what it normalizes."""
        if target.startswith("output:"):
            return self.model.outputs[int(target.split(":")[1])]
        if target.startswith("input:"):
            return self.layers[target.removeprefix("input:")].input
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


def import_tensorflow() -> Any:
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
    """The telling line of a TensorFlow error, with the node it names.

    Runtime errors read "Graph execution error:", "Detected at node 'c' defined at ...:",
    the Python frames that built the node, "Node: 'c'", then the reason and "[[{{node c}}]]".
    """
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    node = next((line[len("Node: ") :] for line in lines if line.startswith("Node: '")), None)
    reasons = [line for line in lines if not line.endswith(":") and not line.startswith(_NOISE)]
    line = (reasons or lines or [type(error).__name__])[0]
    if node is not None and node not in line:
        line = f"{line}, at node {node}"
    return line if len(line) <= 300 else line[:297] + "..."


_NOISE = ("Detected at node", 'File "', "Node: ", "[[")


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
    return graph, tf.compat.v1.Session(graph=graph, config=session_config(tf))


def session_config(tf: Any) -> Any:
    """A session that runs each op as the graph says, with no graph rewrite.

    Grappler fuses and folds each graph it is given differently (a convolution with its bias
    and activation, constants into their users), so the same op gave values about 1e-5 apart
    in a chunk and in a run of the whole graph, and in the frozen graph and its reference.
    Without rewrites, the same op on the same input gives the same bits wherever it runs.
    """
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    options = config.graph_options.optimizer_options
    options.opt_level = tf.compat.v1.OptimizerOptions.L0
    options.do_constant_folding = False
    options.do_function_inlining = True  # function calls still run, inlined or not
    return config


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
