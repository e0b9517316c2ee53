"""A layer's own contribution: its frozen parameters and mode applied to the reference's input.

A layer whose output differs from the reference's may only inherit the difference from an
earlier layer. To tell, the run fetches each layer's input from the reference too, and numpy
applies the frozen layer to it: `y = (x - mean) / sqrt(variance + epsilon) * gamma + beta`,
with the frozen moving statistics in inference, or the batch's own (over every axis but the
channel's, biased) when the frozen layer normalizes with batch statistics. Compared with the
reference's output, that is the difference the layer makes itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.detect import BnLayer
from bnaudit.formats import protos
from bnaudit.report.results import ActivationDiff
from bnaudit.run.diff import activation_diff

_CHANNELS_FIRST = frozenset({"NCHW", "NCDHW", "channels_first"})


@dataclass(frozen=True)
class LayerMath:
    """What numpy needs to apply one frozen layer."""

    gamma: NDArray[Any] | None
    beta: NDArray[Any] | None
    mean: NDArray[Any] | None
    """None with `batch_stats`."""
    variance: NDArray[Any] | None
    epsilon: float
    channels_first: bool
    batch_stats: bool
    """The frozen layer normalizes with the batch's statistics (training mode, or its flag
    fed True)."""


def layer_math(layer: BnLayer, fed: dict[str, NDArray[Any]]) -> LayerMath | None:
    """How the frozen layer computes on this run's feeds; None when bnaudit cannot say."""
    if layer.epsilon is None or layer.deviation is not None:
        return None  # numpy computes BN's formula, not a hand-written variant
    if layer.flag is not None and layer.flag.name in fed:
        batch_stats = bool(np.all(fed[layer.flag.name]))
    elif layer.mode == "conditional":
        if layer.flag is None or layer.flag.default is None:
            return None  # decided by a flag nobody feeds: TensorFlow would refuse to run it
        batch_stats = layer.flag.default
    else:
        batch_stats = layer.mode == "training"
    values: dict[str, NDArray[Any] | None] = {}
    for role, param in layer.params.items():
        if param.kind == "absent":
            values[role] = None
        elif param.kind == "const" and param.value is not None:
            values[role] = np.asarray(param.value, np.float64).reshape(-1)
        elif batch_stats and role in ("moving_mean", "moving_variance"):
            values[role] = None
        else:
            return None
    if not batch_stats and (values["moving_mean"] is None or values["moving_variance"] is None):
        return None
    return LayerMath(
        gamma=values["gamma"],
        beta=values["beta"],
        mean=None if batch_stats else values["moving_mean"],
        variance=None if batch_stats else values["moving_variance"],
        epsilon=layer.epsilon,
        channels_first=layer.data_format in _CHANNELS_FIRST,
        batch_stats=batch_stats,
    )


def apply(math: LayerMath, x: NDArray[Any]) -> tuple[NDArray[Any], float] | None:
    """The frozen layer's output for `x`, in float64, and the largest magnitude its sum
    `normalized * gamma + beta` adds up (what rounding scales with); None when the shapes
    do not agree."""
    values = np.asarray(x, np.float64)
    if values.ndim < 2:
        return None
    axis = 1 if math.channels_first else values.ndim - 1
    channels = values.shape[axis]
    shape = [1] * values.ndim
    shape[axis] = channels

    def per_channel(param: NDArray[Any] | None, default: float) -> NDArray[Any] | None:
        if param is None:
            return np.full(shape, default)
        return param.reshape(shape) if param.size == channels else None

    if math.batch_stats:
        others = tuple(a for a in range(values.ndim) if a != axis)
        mean = values.mean(axis=others, keepdims=True)
        variance = values.var(axis=others, keepdims=True)
    else:
        mean, variance = per_channel(math.mean, 0.0), per_channel(math.variance, 1.0)
    gamma, beta = per_channel(math.gamma, 1.0), per_channel(math.beta, 0.0)
    if mean is None or variance is None or gamma is None or beta is None:
        return None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        scaled: NDArray[Any] = (values - mean) / np.sqrt(variance + math.epsilon) * gamma
        magnitude = float(np.max(np.abs(scaled), initial=0.0) + np.max(np.abs(beta)))
        return scaled + beta, magnitude


@dataclass(frozen=True)
class Measured:
    """A fetched tensor's difference end to end, and for a layer output the layer's own."""

    activation: ActivationDiff
    own: ActivationDiff | None = None


class Contributions:
    """Reduces each fetched pair to its difference; for a layer's output, adds the layer's
    own difference, from the reference's input fetched just before it.

    Only the reference's input of a layer still to come is kept, and only until that
    layer's output arrives. In a graph computing in half precision (`precision`, the epsilon
    of its narrowest float), end-to-end differences are compared at that rounding: two
    runtimes (TensorFlow's session and Keras) round float16 convolutions differently, and the
    difference spreads to float32 outputs. A layer's own difference is not: on the same input
    the layer computes in its own output type.
    """

    def __init__(
        self,
        inputs: dict[str, str],
        maths: dict[str, LayerMath],
        atol: float,
        rtol: float,
        precision: float = 0.0,
    ) -> None:
        self.inputs = inputs
        """Layer output tensor -> its input tensor (frozen graph names)."""
        self.maths = maths
        self.atol, self.rtol = atol, rtol
        self.precision = precision
        self.waiting: dict[str, int] = {}
        for source in inputs.values():
            self.waiting[source] = self.waiting.get(source, 0) + 1
        self.kept: dict[str, NDArray[Any]] = {}

    def __call__(self, name: str, ours: NDArray[Any], theirs: NDArray[Any]) -> Measured:
        if name in self.waiting:
            self.kept[name] = theirs
        atol = self.atol
        if self.precision:
            finite = theirs[np.isfinite(theirs)] if theirs.dtype.kind == "f" else theirs
            largest = float(np.max(np.abs(finite), initial=0.0))
            atol = max(atol, ROUNDING_ULPS * self.precision * largest)
        measured = Measured(activation_diff(ours, theirs, atol, self.rtol))
        source = self.inputs.get(name)
        if source is None:
            return measured
        x = self.kept.get(source)
        self.waiting[source] -= 1
        if self.waiting[source] == 0:
            self.kept.pop(source, None)
        if x is None or name not in self.maths:
            return measured
        found = apply(self.maths[name], x)
        if found is None or found[0].shape != theirs.shape:
            return measured
        own, magnitude = found
        # The layer itself computes in the reference's own type: only that type's rounding.
        atol = max(self.atol, rounding(theirs, magnitude))
        return Measured(measured.activation, activation_diff(own, theirs, atol, self.rtol))


ROUNDING_ULPS = 32
"""How many units in the last place of the reference's float type its own arithmetic may
be off by, at the largest magnitude it adds up: numpy computes the layer in float64, and
TensorFlow in another order and precision."""


def half_precision(graph_def: Any) -> float:
    """The epsilon of the narrowest float type a graph computes in, when it is narrower
    than float32 (float16, bfloat16); 0 otherwise."""
    found = 0.0
    bodies = [graph_def.node, *(f.node_def for f in graph_def.library.function)]
    for nodes in bodies:
        for node in nodes:
            for attr in ("T", "DstT", "dtype"):
                if attr in node.attr:
                    found = max(found, _NARROW.get(int(node.attr[attr].type) % 100, 0.0))
    return found


_NARROW = {
    protos.DATA_TYPES["DT_HALF"]: float(np.finfo(np.float16).eps),
    protos.DATA_TYPES["DT_BFLOAT16"]: 2.0**-7,
}


def rounding(theirs: NDArray[Any], magnitude: float) -> float:
    """The difference TensorFlow's rounding alone can make in this layer's output."""
    if not np.issubdtype(theirs.dtype, np.floating) or not np.isfinite(magnitude):
        return 0.0
    return ROUNDING_ULPS * float(np.finfo(theirs.dtype).eps) * magnitude
