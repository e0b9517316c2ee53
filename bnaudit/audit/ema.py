"""Exponential moving averages: which of a checkpoint's two values the graph froze.

`tf.compat.v1.train.ExponentialMovingAverage` keeps a shadow of each variable it averages,
saved beside it as `<variable>/ExponentialMovingAverage` (or `/<name>` for an EMA given a
name). Evaluation is meant to use the shadows (`ema.variables_to_restore()`); freezing the raw
values instead is a known way to lose accuracy (tensorflow/tensorflow#9724, #25912). A
graph that froze the shadows is right, and must not be called stale.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.detect import BnLayer
from bnaudit.audit.match import Group, GroupValues
from bnaudit.audit.options import Tolerances
from bnaudit.checkpoint.base import Checkpoint
from bnaudit.findings import Finding, finding
from bnaudit.vocab import ROLES, Role

_SHADOW = re.compile(r"(ExponentialMovingAverage|([A-Za-z]+_)?(ema|EMA))(_\d+)?")
"""The last name part of a shadow: the EMA's name, `ExponentialMovingAverage` by default."""


def shadows(ckpt: Checkpoint) -> dict[str, str]:
    """Variable key -> the key of its moving-average shadow, for the variables that have one."""
    keys = {v.key for v in ckpt.variables()}
    found = {}
    for key in keys:
        raw, _, leaf = key.rpartition("/")
        if raw in keys and _SHADOW.fullmatch(leaf):
            found[raw] = key
    return found


def intended_values(
    layer: BnLayer,
    group: Group,
    values: GroupValues,
    shadow_of: dict[str, str],
    tolerances: Tolerances,
) -> tuple[dict[Role, NDArray[Any] | None], list[Finding]]:
    """Role -> the checkpoint value the frozen layer should hold, and what the EMA says.

    The shadow where the graph froze it (the finding says so), the raw value elsewhere; when
    the graph froze raw values that have shadows of their own, a warning.
    """
    raw = {role: values.of(group, role) for role in ROLES}
    shadowed: dict[Role, str] = {
        role: shadow_of[group.keys[role]] for role in ROLES if group.keys.get(role) in shadow_of
    }
    if not shadowed:
        return raw, []
    frozen_shadow: list[Role] = []
    frozen_raw: list[Role] = []
    chosen = dict(raw)
    for role, key in shadowed.items():
        ours = layer.params[role].value if layer.params[role].kind == "const" else None
        average = np.asarray(values.ckpt.read(key))
        value = raw[role]
        if ours is None or value is None or average.size != ours.size:
            continue
        if _same(ours, average, tolerances) and not _same(ours, value, tolerances):
            frozen_shadow.append(role)
            chosen[role] = average
        elif _same(ours, value, tolerances) and not _same(average, value, tolerances):
            frozen_raw.append(role)
    if frozen_shadow:
        said = ", ".join(frozen_shadow)
        return chosen, [
            finding(
                "ema-averaged",
                f"the graph froze the moving averages of {said} "
                f"({shadowed[frozen_shadow[0]].rpartition('/')[2]}), as evaluation should",
            )
        ]
    if frozen_raw:
        said = ", ".join(frozen_raw)
        return raw, [
            finding(
                "ema-raw",
                f"the checkpoint holds moving averages of {said}, but the graph froze the raw "
                "values",
            )
        ]
    return raw, []


def _same(ours: NDArray[Any], theirs: NDArray[Any], tolerances: Tolerances) -> bool:
    return bool(
        np.all(
            np.isclose(
                ours.reshape(-1),
                theirs.reshape(-1),
                atol=tolerances.stat_atol,
                rtol=tolerances.stat_rtol,
                equal_nan=True,
            )
        )
    )
