"""Folding BN into a convolution again: which weight axis each output channel's scale hits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from bnaudit.audit.fold import check_fold, find_candidates, refold
from bnaudit.formats import protos
from bnaudit.formats.tensors import encode_tensor
from bnaudit.model import load_model

_DT_FLOAT = 1


def _stats(gamma: list[float], mean: float = 0.0) -> dict[str, NDArray[Any] | None]:
    """BN statistics whose scale gamma / sqrt(var + 0) is exactly gamma."""
    channels = len(gamma)
    return {
        "gamma": np.array(gamma),
        "beta": np.full(channels, 0.5),
        "moving_mean": np.full(channels, mean),
        "moving_variance": np.ones(channels),
    }


def test_depthwise_scale_is_laid_out_in_by_multiplier() -> None:
    # in=2 channels, multiplier M=3: output channel i * 3 + m comes from filter[..., i, m].
    # in != M and distinct scales, so an (M, in) layout or a last-axis broadcast fails.
    kernel = np.ones((1, 1, 2, 3))
    weights, offset = refold(kernel, None, _stats([1, 2, 3, 4, 5, 6]), 0.0, "DepthwiseConv2dNative")
    np.testing.assert_array_equal(weights[0, 0], [[1, 2, 3], [4, 5, 6]])
    assert offset.shape == (6,)


def test_depthwise_offset_is_per_output_channel() -> None:
    kernel = np.ones((1, 1, 2, 3))
    bias = np.arange(6.0)
    stats = _stats([1, 2, 3, 4, 5, 6], mean=1.0)
    _, offset = refold(kernel, bias, stats, 0.0, "DepthwiseConv2dNative")
    # beta + (bias - mean) * scale, channel by channel
    np.testing.assert_allclose(offset, 0.5 + (np.arange(6.0) - 1.0) * np.arange(1.0, 7.0))


def test_conv2d_scale_hits_the_output_axis() -> None:
    kernel = np.arange(6.0).reshape(1, 1, 2, 3)  # [H, W, in=2, out=3]
    weights, offset = refold(kernel, np.ones(3), _stats([1, 2, 3], mean=2.0), 0.0, "Conv2D")
    np.testing.assert_array_equal(weights[0, 0], [[0, 2, 6], [3, 8, 15]])
    np.testing.assert_allclose(offset, [-0.5, -1.5, -2.5])


def _const(graph_def: Any, name: str, value: NDArray[Any]) -> None:
    node = graph_def.node.add()
    node.name, node.op = name, "Const"
    node.attr["dtype"].type = _DT_FLOAT
    node.attr["value"].tensor.CopyFrom(encode_tensor(value.astype(np.float32), _DT_FLOAT))


def _depthwise_graph(path: Path, weights: NDArray[Any], offset: NDArray[Any]) -> Path:
    """input -> DepthwiseConv2dNative(weights) -> BiasAdd(offset), named as the fold names it."""
    graph_def = protos.GraphDef()
    node = graph_def.node.add()
    node.name, node.op = "input", "Placeholder"
    node.attr["dtype"].type = _DT_FLOAT
    _const(graph_def, "dw/depthwise_weights", weights)
    node = graph_def.node.add()
    node.name, node.op = "dw/depthwise", "DepthwiseConv2dNative"
    node.input.extend(["input", "dw/depthwise_weights"])
    _const(graph_def, "dw/depthwise_bn_offset", offset)
    node = graph_def.node.add()
    node.name, node.op = "bn/FusedBatchNormV3", "BiasAdd"
    node.input.extend(["dw/depthwise", "dw/depthwise_bn_offset"])
    path.write_bytes(graph_def.SerializeToString())
    return path


def test_depthwise_fold_is_a_candidate_and_checks(tmp_path: Path) -> None:
    rng = np.random.RandomState(0)
    kernel = rng.randn(3, 3, 2, 3)
    gamma = rng.uniform(0.5, 2.0, 6)
    stats = _stats(list(gamma), mean=0.25)
    # Folded as optimize_for_inference does, element by element: scale[i * M + m].
    scale = gamma / np.sqrt(1.0 + 1e-3)
    weights = kernel.copy()
    for h, w, i, m in np.ndindex(*kernel.shape):
        weights[h, w, i, m] *= scale[i * 3 + m]
    offset = 0.5 - 0.25 * scale
    graph = load_model(_depthwise_graph(tmp_path / "g.pb", weights, offset))
    [candidate] = find_candidates(graph)
    assert (candidate.name, candidate.scope) == ("bn/FusedBatchNormV3", "bn")
    assert (candidate.linear, candidate.linear_op) == ("dw/depthwise", "DepthwiseConv2dNative")
    check = check_fold(candidate, kernel, None, stats)
    assert check.epsilon == pytest.approx(1e-3)
    assert check.max_abs_diff < 1e-6
    stale = {**stats, "moving_mean": np.full(6, 0.5)}
    assert check_fold(candidate, kernel, None, stale).max_abs_diff > 1e-2


def test_depthwise_offset_of_the_multiplier_is_no_candidate(tmp_path: Path) -> None:
    # A bias over the filter's last axis (M values) is not per output channel (in * M).
    path = _depthwise_graph(tmp_path / "g.pb", np.ones((3, 3, 2, 3)), np.zeros(3))
    assert find_candidates(load_model(path)) == []
