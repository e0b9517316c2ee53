"""Pairing a folded convolution with its checkpoint kernel and BN: never by channel count."""

from __future__ import annotations

from typing import Any

import numpy as np
from fakes import MemoryCheckpoint
from numpy.typing import NDArray

from bnaudit.audit.foldpair import Fold, choose_kernel, ends_with, pair_folds
from bnaudit.audit.match import Group, GroupValues
from bnaudit.checkpoint.base import VariableInfo
from bnaudit.checkpoint.layout import Layout

_RNG = np.random.default_rng(0)


def _bn(
    scope: str, channels: int, order: int, names: tuple[str, ...] = ()
) -> tuple[Group, dict[str, NDArray[Any]]]:
    keys = {role: f"{scope}/{role}" for role in ("gamma", "beta", "moving_mean", "moving_variance")}
    arrays = {
        keys["gamma"]: _RNG.uniform(0.5, 1.5, channels),
        keys["beta"]: _RNG.normal(0, 0.1, channels),
        keys["moving_mean"]: _RNG.normal(0, 0.1, channels),
        keys["moving_variance"]: _RNG.uniform(0.5, 2, channels),
    }
    return Group(scope, (scope, *names), keys, channels, order), arrays


def _scale(arrays: dict[str, NDArray[Any]], scope: str) -> NDArray[Any]:
    return arrays[f"{scope}/gamma"] / np.sqrt(arrays[f"{scope}/moving_variance"] + 1e-3)


def test_ends_with_tolerates_a_repeated_scope() -> None:
    assert ends_with(
        "InceptionV2/InceptionV2/Mixed_3b/Branch_1/BatchNorm",
        "InceptionV2/Mixed_3b/Branch_1/BatchNorm",
    )
    assert not ends_with(
        "InceptionV2/InceptionV2/Mixed_3b/Branch_2/BatchNorm",
        "InceptionV2/Mixed_3b/Branch_1/BatchNorm",
    )
    assert ends_with("model/bn1", "bn1") and not ends_with("model/xbn1", "bn1")


def test_kernel_found_by_values_among_kernels_of_one_shape() -> None:
    """Object-based keys name no scope: of three same-shaped kernels, the values tell."""
    kernels = {f"layer_with_weights-{i}/kernel": _RNG.normal(size=(3, 3, 4, 8)) for i in range(3)}
    folded = kernels["layer_with_weights-1/kernel"] * _RNG.uniform(0.5, 2, 8)
    fold = Fold("bn/FusedBatchNormV3", "conv/Conv2D", "Conv2D", folded, 8)
    variables = [VariableInfo(k, "float32", v.shape) for k, v in kernels.items()]
    choice = choose_kernel(fold, variables, {}, kernels.__getitem__)
    assert choice.key == "layer_with_weights-1/kernel"
    # A few more training steps change the kernel a little: still clearly the one.
    drifted = {k: v + _RNG.normal(0, 0.01, v.shape) for k, v in kernels.items()}
    assert (
        choose_kernel(fold, variables, {}, drifted.__getitem__).key == "layer_with_weights-1/kernel"
    )


def test_two_equally_good_kernels_are_ambiguous() -> None:
    kernel = _RNG.normal(size=(3, 3, 4, 8))
    kernels = {"a/kernel": kernel, "b/kernel": kernel * 2}
    fold = Fold("bn/FusedBatchNormV3", "conv/Conv2D", "Conv2D", kernel * 3, 8)
    variables = [VariableInfo(k, "float32", v.shape) for k, v in kernels.items()]
    choice = choose_kernel(fold, variables, {}, kernels.__getitem__)
    assert choice.key is None and set(choice.rivals) == {"a/kernel", "b/kernel"}


def test_stale_folds_pair_by_model_order_not_by_channel_count() -> None:
    """Two BN of 8 channels after two same-shaped kernels, folded from stale statistics: the
    scales match no group, so model order (kernel, then its BN) pairs them, crosswise to
    graph order; a channel-count guess would swap them."""
    bn_a, arrays_a = _bn("layer_with_weights-1", 8, 0)
    bn_b, arrays_b = _bn("layer_with_weights-3", 8, 1)
    k0, k2 = _RNG.normal(size=(3, 3, 4, 8)), _RNG.normal(size=(3, 3, 4, 8))
    arrays = {
        **arrays_a,
        **arrays_b,
        "layer_with_weights-0/kernel": k0,
        "layer_with_weights-2/kernel": k2,
    }
    ckpt = MemoryCheckpoint(arrays)
    stale = _RNG.uniform(0.5, 2, 8)
    folds = [  # graph order: the second conv first
        Fold("x/bn_second/FusedBatchNormV3", "x/c2/Conv2D", "Conv2D", k2 * stale, 8),
        Fold("x/bn_first/FusedBatchNormV3", "x/c0/Conv2D", "Conv2D", k0 * stale, 8),
    ]
    positions = {k: int(k.split("-")[1][0]) for k in arrays}
    variables = [v for v in ckpt.variables() if "kernel" in v.key]
    pairing = pair_folds(folds, [bn_a, bn_b], GroupValues(ckpt), Layout({}, positions), variables)
    paired = {p.fold.linear: p.group.scope for p in pairing.pairs}
    assert paired == {"x/c0/Conv2D": "layer_with_weights-1", "x/c2/Conv2D": "layer_with_weights-3"}


def test_fresh_folds_pair_by_their_scale_when_nothing_else_tells() -> None:
    bn_a, arrays_a = _bn("p", 8, 0)
    bn_b, arrays_b = _bn("q", 8, 1)
    k0, k1 = _RNG.normal(size=(3, 3, 4, 8)), _RNG.normal(size=(3, 3, 4, 8))
    ckpt = MemoryCheckpoint({**arrays_a, **arrays_b, "k0": k0, "k1": k1})
    folds = [
        Fold("f0/BiasAdd", "f0/Conv2D", "Conv2D", k0 * _scale(arrays_b, "q"), 8),
        Fold("f1/BiasAdd", "f1/Conv2D", "Conv2D", k1 * _scale(arrays_a, "p"), 8),
    ]
    variables = [v for v in ckpt.variables() if v.key.startswith("k")]
    pairing = pair_folds(folds, [bn_a, bn_b], GroupValues(ckpt), Layout({}, {}), variables)
    assert {p.fold.name: p.group.scope for p in pairing.pairs} == {
        "f0/BiasAdd": "q",
        "f1/BiasAdd": "p",
    }


def test_a_group_nothing_pairs_is_ambiguous_between_the_folds_that_fit() -> None:
    bn_a, arrays_a = _bn("p", 8, 0)
    k0, k1 = _RNG.normal(size=(3, 3, 4, 8)), _RNG.normal(size=(3, 3, 4, 8))
    ckpt = MemoryCheckpoint({**arrays_a, "k0": k0, "k1": k1})
    stale = _RNG.uniform(0.5, 2, 8)
    folds = [
        Fold(f"f{i}/BiasAdd", f"f{i}/Conv2D", "Conv2D", k * stale, 8)
        for i, k in enumerate((k0, k1))
    ]
    variables = [v for v in ckpt.variables() if v.key.startswith("k")]
    pairing = pair_folds(folds, [bn_a], GroupValues(ckpt), Layout({}, {}), variables)
    assert pairing.pairs == ()
    assert [(g.scope, len(rivals)) for g, rivals in pairing.ambiguous] == [("p", 2)]
