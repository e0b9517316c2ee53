"""How far apart two tensors are: the numbers every run reduces a fetched pair to."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.report.results import ActivationDiff

BLOCK = 1 << 22
"""Elements reduced at a time, so float64 copies stay small."""


def activation_diff(
    ours: NDArray[Any], theirs: NDArray[Any], atol: float, rtol: float, block: int = BLOCK
) -> ActivationDiff:
    """Compare two tensors in float64, block by block; NaN against NaN counts as equal.

    They diverge when some element differs by more than `atol` and, relative to `theirs`,
    by more than `rtol` (the largest absolute and relative differences may come from two
    different elements: a large value off by its rounding and a near-zero one off by less
    than `atol` are no divergence). Values near float64's limit give infinite differences,
    never warnings, and the cosine is computed on rescaled values when the plain sums
    overflow.
    """
    if ours.shape != theirs.shape:
        return ActivationDiff(np.inf, np.inf, np.inf, float("nan"), True)
    a, b = ours.reshape(-1), theirs.reshape(-1)
    max_abs = max_rel = total = dot = norm_a = norm_b = 0.0
    divergent = False
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for start in range(0, a.size, block):
            stats = _block_stats(a[start : start + block], b[start : start + block], atol, rtol)
            max_abs, max_rel = max(max_abs, stats[0]), max(max_rel, stats[1])
            total, dot = total + stats[2], dot + stats[3]
            norm_a, norm_b = norm_a + stats[4], norm_b + stats[5]
            divergent = divergent or stats[6]
        if not np.isfinite([dot, norm_a, norm_b]).all():
            dot, norm_a, norm_b = _rescaled_products(a, b)
    if norm_a == 0 and norm_b == 0:
        cosine = 1.0
    elif norm_a == 0 or norm_b == 0:
        cosine = 0.0
    else:
        cosine = dot / (np.sqrt(norm_a) * np.sqrt(norm_b))
    mean_abs = total / a.size if a.size else 0.0
    return ActivationDiff(max_abs, max_rel, mean_abs, cosine, divergent)


def _block_stats(
    ours: NDArray[Any], theirs: NDArray[Any], atol: float, rtol: float
) -> tuple[float, float, float, float, float, float, bool]:
    """Max abs and relative difference, summed abs difference, x.y, x.x, y.y of one block,
    and whether an element exceeds both tolerances."""
    x, y = ours.astype(np.float64), theirs.astype(np.float64)
    if _all_finite(ours) and _all_finite(theirs):
        # The usual case, in fewer passes and the same numbers: no NaN, nothing to mask.
        delta = np.subtract(x, y)
        np.abs(delta, out=delta)
        relative = np.abs(y)
        np.maximum(relative, 1e-12, out=relative)
        np.divide(delta, relative, out=relative)
        products = (float(np.dot(x, y)), float(np.dot(x, x)), float(np.dot(y, y)))
        off = bool(np.any((delta > atol) & (relative > rtol)))
        return (float(delta.max()), float(relative.max()), float(delta.sum()), *products, off)
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    delta = np.where(same, 0.0, np.abs(x - y))
    delta[np.isnan(delta)] = np.inf
    relative = np.where(delta == 0, 0.0, delta / np.maximum(np.abs(y), 1e-12))
    relative[np.isnan(relative)] = np.inf
    off = bool(np.any((delta > atol) & (relative > rtol)))
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    products = (float(np.dot(x, y)), float(np.dot(x, x)), float(np.dot(y, y)))
    return (float(delta.max()), float(relative.max()), float(delta.sum()), *products, off)


def _rescaled_products(a: NDArray[Any], b: NDArray[Any]) -> tuple[float, float, float]:
    """x.y, x.x and y.y over the finite pairs, each side divided by its largest magnitude:
    the cosine they give is the same, and the sums no longer overflow."""
    finite = np.isfinite(a) & np.isfinite(b)
    x, y = a[finite].astype(np.float64), b[finite].astype(np.float64)
    scale_x = float(np.abs(x).max()) if x.size else 1.0
    scale_y = float(np.abs(y).max()) if y.size else 1.0
    x, y = x / (scale_x or 1.0), y / (scale_y or 1.0)
    return float(np.dot(x, y)), float(np.dot(x, x)), float(np.dot(y, y))


def _all_finite(values: NDArray[Any]) -> bool:
    """No NaN and no infinity (min and max propagate both), without a boolean array."""
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))
