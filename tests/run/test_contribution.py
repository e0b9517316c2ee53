"""A layer's own contribution: the frozen layer applied by numpy to the reference's input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bnaudit.audit.detect import BnLayer, Param
from bnaudit.audit.trace import Flag
from bnaudit.run.contribution import Contributions, apply, layer_math

_RNG = np.random.default_rng(3)


def _layer(mode: str = "inference", data_format: str = "NHWC", flag: Flag | None = None) -> BnLayer:
    values = {
        "gamma": np.array([1.0, 2.0, 0.5], np.float32),
        "beta": np.array([0.0, 1.0, -1.0], np.float32),
        "moving_mean": np.array([0.5, -0.5, 2.0], np.float32),
        "moving_variance": np.array([1.0, 4.0, 0.25], np.float32),
    }
    params = {
        role: Param("batch", "batch statistics", None)
        if mode == "training" and role.startswith("moving")
        else Param("const", f"bn/{role}", value)
        for role, value in values.items()
    }
    return BnLayer(
        name="bn/FusedBatchNormV3", scope="bn", op="FusedBatchNormV3", mode=mode,  # type: ignore[arg-type]
        flag=flag, epsilon=1e-3, channels=3, data_format=data_format, params=params,
        position=0, core_nodes=("bn/FusedBatchNormV3",), input="conv/Conv2D:0",
    )  # fmt: skip


def test_inference_uses_the_frozen_statistics_per_channel() -> None:
    x = _RNG.normal(size=(2, 4, 4, 3))
    math = layer_math(_layer(), {})
    assert math is not None and not math.batch_stats
    y, _ = apply(math, x)  # type: ignore[misc]
    mean, var = np.array([0.5, -0.5, 2.0]), np.array([1.0, 4.0, 0.25])
    want = (x - mean) / np.sqrt(var + 1e-3) * np.array([1.0, 2.0, 0.5]) + np.array([0, 1, -1])
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_channels_first_normalizes_axis_one() -> None:
    x = _RNG.normal(size=(2, 3, 4, 4))
    math = layer_math(_layer(data_format="NCHW"), {})
    assert math is not None
    found = apply(math, x)
    assert found is not None
    y = found[0]
    np.testing.assert_allclose(y[:, 1], (x[:, 1] + 0.5) / np.sqrt(4.001) * 2.0 + 1.0, rtol=1e-6)


def test_training_mode_normalizes_with_the_batchs_statistics() -> None:
    x = _RNG.normal(3.0, 2.0, size=(8, 5, 5, 3))
    math = layer_math(_layer("training"), {})
    assert math is not None and math.batch_stats
    found = apply(math, x)
    assert found is not None
    y = found[0]
    # gamma and beta applied to a batch normalized to mean 0 and variance ~1
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), [0.0, 1.0, -1.0], atol=1e-9)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), [1, 2, 0.5], rtol=1e-3)


def test_a_flag_fed_true_means_batch_statistics() -> None:
    flag = Flag("is_training", False, constant=False)
    layer = _layer("conditional", flag=flag)
    assert layer_math(layer, {"is_training": np.asarray(True)}).batch_stats  # type: ignore[union-attr]
    assert not layer_math(layer, {"is_training": np.asarray(False)}).batch_stats  # type: ignore[union-attr]
    assert not layer_math(layer, {}).batch_stats  # type: ignore[union-attr]  # its default


def test_a_parameter_that_is_no_constant_cannot_be_applied() -> None:
    layer = _layer()
    params = {**layer.params, "gamma": Param("other", "Mul", None)}
    assert layer_math(BnLayer(**{**layer.__dict__, "params": params}), {}) is None


def test_channels_that_do_not_fit_give_nothing() -> None:
    math = layer_math(_layer(), {})
    assert math is not None and apply(math, _RNG.normal(size=(2, 4, 4, 5))) is None


def _reducer() -> Contributions:
    math = layer_math(_layer(), {})
    assert math is not None
    return Contributions({"bn:0": "conv:0"}, {"bn:0": math}, 1e-5, 1e-5)


def test_a_layer_given_a_different_input_that_computes_right_only_inherits() -> None:
    reduce = _reducer()
    x_ref = _RNG.normal(size=(2, 4, 4, 3))
    x_frozen = x_ref + 0.5  # an earlier layer changed the input
    math = layer_math(_layer(), {})
    assert math is not None
    found_ref, found_frozen = apply(math, x_ref), apply(math, x_frozen)
    assert found_ref is not None and found_frozen is not None
    y_ref, y_frozen = found_ref[0], found_frozen[0]
    reduce("conv:0", x_frozen, x_ref)
    measured = reduce("bn:0", y_frozen, y_ref)
    assert measured.activation.divergent
    assert measured.own is not None and not measured.own.divergent
    assert measured.own.max_abs_diff == pytest.approx(0.0, abs=1e-12)
    assert reduce.kept == {}  # the reference's input is dropped once used


def test_a_layer_whose_values_differ_changes_the_result_itself() -> None:
    reduce = _reducer()
    x = _RNG.normal(size=(2, 4, 4, 3))
    math = layer_math(_layer(), {})
    assert math is not None
    found = apply(math, x)
    assert found is not None
    y_frozen = found[0]
    y_ref: Any = y_frozen + 0.25  # the checkpoint's beta is 0.25 more
    reduce("conv:0", x, x)
    measured = reduce("bn:0", y_frozen, y_ref)
    assert measured.own is not None and measured.own.divergent
    assert measured.own.max_abs_diff == pytest.approx(0.25)


def test_without_the_reference_input_nothing_is_measured() -> None:
    reduce = _reducer()
    y = _RNG.normal(size=(2, 4, 4, 3))
    assert reduce("bn:0", y, y).own is None


def test_tensorflows_rounding_at_large_magnitudes_is_no_own_difference() -> None:
    """A healthy layer whose outputs reach ~1000: TensorFlow computes it in float32, in its
    own order (x * scale + (beta - mean * scale)), and its result is off from numpy's
    float64 one by units in the last place of 1000 (over --atol), with near-zero elements
    off by large relative amounts: that is rounding, not the layer."""
    math = layer_math(_layer(), {})
    assert math is not None
    x = _RNG.normal(0.0, 700.0, size=(4, 8, 8, 3)).astype(np.float32)
    values = {r: p.value for r, p in _layer().params.items()}
    scale = (values["gamma"] / np.sqrt(values["moving_variance"] + np.float32(1e-3))).astype(
        np.float32
    )
    theirs = x * scale + (values["beta"] - values["moving_mean"] * scale)
    assert theirs.dtype == np.float32
    reduce = Contributions({"bn:0": "conv:0"}, {"bn:0": math}, 1e-5, 1e-5)
    reduce("conv:0", x, x)
    measured = reduce("bn:0", theirs, theirs)
    assert measured.own is not None and not measured.own.divergent
    assert measured.own.max_abs_diff > 1e-5  # over --atol: only rounding keeps it calm
    wrong = theirs + np.float32(0.05)  # a real difference at that magnitude still shows
    reduce("conv:0", x, x)
    assert reduce("bn:0", wrong, wrong).own.divergent  # type: ignore[union-attr]
    # ... also in a graph that computes elsewhere in bfloat16: the layer computes in float32
    in_bf16 = Contributions({"bn:0": "conv:0"}, {"bn:0": math}, 1e-5, 1e-5, 2.0**-7)
    in_bf16("conv:0", x, x)
    assert in_bf16("bn:0", wrong, wrong).own.divergent  # type: ignore[union-attr]


def test_a_half_precision_graph_is_compared_at_half_precisions_rounding() -> None:
    """A float16 convolution rounded by two runtimes spreads ~1 float16 ulp into a float32
    output: no divergence in a graph computing in float16, a divergence in a float32 one."""
    from bnaudit.formats import protos
    from bnaudit.run.contribution import half_precision

    graph_def = protos.GraphDef()
    graph_def.node.add(name="x", op="Placeholder").attr["dtype"].type = 1
    assert half_precision(graph_def) == 0.0
    graph_def.node.add(name="c", op="Cast", input=["x"]).attr["DstT"].type = 19
    eps16 = float(np.finfo(np.float16).eps)
    assert half_precision(graph_def) == eps16
    theirs = _RNG.uniform(0.0, 1.0, size=(4, 5)).astype(np.float32)
    ours = theirs + np.float32(5e-5)  # about 1/20 of a float16 ulp near 1
    assert not Contributions({}, {}, 1e-5, 1e-5, eps16)("out:0", ours, theirs).activation.divergent
    assert Contributions({}, {}, 1e-5, 1e-5)("out:0", ours, theirs).activation.divergent
    far = theirs + np.float32(0.1)  # a real difference still shows in float16
    assert Contributions({}, {}, 1e-5, 1e-5, eps16)("out:0", far, theirs).activation.divergent
