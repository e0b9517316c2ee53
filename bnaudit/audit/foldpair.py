"""Which checkpoint BN and which kernel a folded convolution was made from.

A fold leaves no BN parameter behind: the BiasAdd keeps the BN's node name, and the
convolution's weights are the kernel scaled per output channel. Pairing never guesses:

- the kernel is the variable named like the convolution's scope, else the one variable of
  the weights' shape that, scaled per output channel, gives the folded weights clearly better
  than any other (stale statistics change only the scale, and a few more training steps
  change the kernel little);
- the BN group, strongest first:
  - `name`: its name ends the fold's scope, part for part (slim nets open their name scope
    twice, `InceptionV2/InceptionV2/Mixed_3b/.../BatchNorm`, while the variables sit under
    `InceptionV2/Mixed_3b/.../BatchNorm`);
  - `structure`: the BN beside the kernel (under the kernel's parent scope), or the next BN
    after the kernel in the checkpoint's model order with no other kernel between them;
  - `values`: the one group whose scale `gamma / sqrt(variance + epsilon)` is the fold's.

A group several folds could be, or a fold whose kernel several variables explain equally well,
is `fold-ambiguous`: reported, never checked against a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.match import Group, GroupValues
from bnaudit.checkpoint.base import VariableInfo
from bnaudit.checkpoint.layout import Layout
from bnaudit.names import normalize, scope_of

# Epsilons BN APIs use by default, tried in turn: a fold does not record its epsilon.
COMMON_EPSILONS = (1e-3, 1e-5, 1e-4, 1.001e-5)
_CLEAR_FIT = 0.3
"""A kernel explains folded weights when its per-channel fit leaves less than this share..."""
_MARGIN = 3.0
"""...and the next best kernel leaves this many times more."""
_MIN_ROWS = 4
"""Fewer weights per output channel than this fit any kernel: values cannot tell."""


@dataclass(frozen=True)
class Fold:
    """What pairing needs of a fold candidate (see `fold.FoldCandidate`)."""

    name: str
    linear: str
    linear_op: str
    weights: NDArray[Any]
    channels: int


@dataclass(frozen=True)
class KernelChoice:
    """The checkpoint kernel of a fold, or why there is none."""

    key: str | None
    rivals: tuple[str, ...] = ()
    """When `key` is None: the variables it could be, none clearly better (empty: none)."""
    scale: NDArray[Any] | None = None
    """The per-channel scale that takes the kernel to the folded weights."""


def ends_with(name: str, scope: str) -> bool:
    """True when `scope`'s parts are the last parts of `name` (both normalized)."""
    whole, tail = normalize(name).split("/"), normalize(scope).split("/")
    return len(tail) <= len(whole) and whole[len(whole) - len(tail) :] == tail


def channel_matrix(weights: NDArray[Any], linear_op: str) -> NDArray[Any]:
    """The weights as (weights per output channel, output channels), in float64.

    A depthwise filter `[H, W, in, M]` gives channel `i * M + m` from `filter[..., i, m]`,
    which is how its last two axes flatten.
    """
    values = np.asarray(weights, np.float64)
    columns = values.shape[2] * values.shape[3] if linear_op.startswith("Depthwise") else None
    columns = columns or values.shape[-1]
    return values.reshape(-1, columns)


def fit(folded: NDArray[Any], kernel: NDArray[Any]) -> tuple[float, NDArray[Any]]:
    """How well a per-channel scale takes `kernel` to `folded` (both channel matrices): the
    share of `folded` the best scale leaves unexplained, and that scale."""
    power = np.sum(kernel * kernel, axis=0)
    scale = np.sum(folded * kernel, axis=0) / np.maximum(power, 1e-30)
    residual = float(np.linalg.norm(folded - kernel * scale))
    size = float(np.linalg.norm(folded))
    return (residual / size if size > 0 else float(residual > 0)), scale


def choose_kernel(
    fold: Fold,
    variables: Iterable[VariableInfo],
    names: dict[str, str],
    read: Callable[[str], NDArray[Any]],
) -> KernelChoice:
    """The checkpoint variable the fold's weights were made from."""
    shaped = [v.key for v in variables if v.shape == fold.weights.shape]
    if not shaped:
        return KernelChoice(None)
    home = scope_of(fold.linear)
    named = [k for k in shaped if ends_with(home, names.get(k, k).rpartition("/")[0])]
    folded = channel_matrix(fold.weights, fold.linear_op)
    if len(named) == 1:
        return KernelChoice(
            named[0], scale=fit(folded, channel_matrix(read(named[0]), fold.linear_op))[1]
        )
    if folded.shape[0] < _MIN_ROWS:
        return KernelChoice(None, tuple(named or shaped))
    fits = {key: fit(folded, channel_matrix(read(key), fold.linear_op)) for key in named or shaped}
    ranked = sorted(fits, key=lambda key: fits[key][0])
    best = fits[ranked[0]][0]
    runner_up = fits[ranked[1]][0] if len(ranked) > 1 else None
    if best < _CLEAR_FIT and (runner_up is None or runner_up > _MARGIN * best):
        return KernelChoice(ranked[0], scale=fits[ranked[0]][1])
    return KernelChoice(None, tuple(key for key in ranked if fits[key][0] < _CLEAR_FIT))


def by_name(fold: Fold, groups: list[Group]) -> Group | None:
    """The group whose name ends the fold's scope; the longest such name wins, a tie none."""
    scope = scope_of(fold.name)
    best: list[tuple[int, Group]] = []
    for group in groups:
        lengths = [len(n.split("/")) for n in group.names if n and ends_with(scope, n)]
        if lengths:
            best.append((max(lengths), group))
    best.sort(key=lambda item: -item[0])
    if best and (len(best) == 1 or best[0][0] > best[1][0]):
        return best[0][1]
    return None


def by_structure(
    kernel: str, groups: list[Group], layout: Layout, kernels: set[str]
) -> Group | None:
    """The BN beside the kernel, or the next BN after it in model order."""
    home = layout.names.get(kernel, kernel).rpartition("/")[0]
    beside = [
        g
        for g in groups
        if home
        and any(
            layout.names.get(k, k).rpartition("/")[0].startswith(home + "/")
            for k in g.keys.values()
        )
    ]
    if len(beside) == 1:
        return beside[0]
    start = layout.positions.get(kernel)
    if start is None:
        return None
    later = [p for k, p in layout.positions.items() if k in kernels and p > start]
    stop = min(later, default=None)
    after = []
    for group in groups:
        spots = [layout.positions.get(k) for k in group.keys.values()]
        if spots and None not in spots:
            first = min(s for s in spots if s is not None)
            if first > start and (stop is None or first < stop):
                after.append((first, group))
    after.sort(key=lambda item: item[0])
    return after[0][1] if after else None


def by_values(scale: NDArray[Any], groups: list[Group], values: GroupValues) -> Group | None:
    """The one group whose BN scale is the fold's."""
    found = [g for g in groups if _scales_agree(scale, g, values)]
    return found[0] if len(found) == 1 else None


def _scales_agree(scale: NDArray[Any], group: Group, values: GroupValues) -> bool:
    variance = values.of(group, "moving_variance")
    if variance is None or variance.size != scale.size:
        return False
    gamma = values.of(group, "gamma")
    gamma = np.ones(scale.size) if gamma is None else gamma.reshape(-1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return any(
            bool(
                np.allclose(
                    scale, gamma / np.sqrt(variance.reshape(-1) + eps), rtol=1e-3, atol=1e-6
                )
            )
            for eps in COMMON_EPSILONS
        )


@dataclass(frozen=True)
class FoldPair:
    """A fold and the checkpoint BN group it was made from."""

    fold: Fold
    group: Group
    kernel: KernelChoice


@dataclass(frozen=True)
class Pairing:
    """Every fold pairing found, and the groups left over."""

    pairs: tuple[FoldPair, ...]
    ambiguous: tuple[tuple[Group, tuple[Fold, ...]], ...]
    """Groups that folds of their channel count are left for, none of them surely theirs."""
    unexplained: tuple[Group, ...]
    """Groups no fold could be."""


def pair_folds(
    folds: list[Fold],
    groups: list[Group],
    values: GroupValues,
    layout: Layout,
    variables: list[VariableInfo],
) -> Pairing:
    """Pair folds with groups by name, then structure, then values; one group per fold."""
    free_folds = [f for f in folds if any(g.channels == f.channels for g in groups)]
    free_groups = list(groups)
    kernels: dict[str, KernelChoice] = {}

    def kernel(fold: Fold) -> KernelChoice:
        if fold.name not in kernels:
            kernels[fold.name] = choose_kernel(fold, variables, layout.names, values.ckpt.read)
        return kernels[fold.name]

    weights = {v.key for v in variables if len(v.shape) >= 2}

    def structure(fold: Fold, fitting: list[Group]) -> Group | None:
        key = kernel(fold).key
        return None if key is None else by_structure(key, fitting, layout, weights)

    def scale(fold: Fold, fitting: list[Group]) -> Group | None:
        found = kernel(fold).scale
        return None if found is None else by_values(found, fitting, values)

    rounds: list[Callable[[Fold, list[Group]], Group | None]] = [by_name, structure, scale]
    pairs: list[FoldPair] = []
    for choose in rounds:
        claims: dict[int, list[Fold]] = {}
        for fold in free_folds:
            group = choose(fold, [g for g in free_groups if g.channels == fold.channels])
            if group is not None:
                claims.setdefault(id(group), []).append(fold)
        for group in list(free_groups):
            claimed = claims.get(id(group), [])
            if len(claimed) == 1:  # two folds claiming one group: neither is sure
                pairs.append(FoldPair(claimed[0], group, kernel(claimed[0])))
                free_groups.remove(group)
                free_folds.remove(claimed[0])
    ambiguous = []
    unexplained = []
    for group in free_groups:
        rivals = tuple(f for f in free_folds if f.channels == group.channels)
        if rivals:
            ambiguous.append((group, rivals))
        else:
            unexplained.append(group)
    return Pairing(tuple(pairs), tuple(ambiguous), tuple(unexplained))
