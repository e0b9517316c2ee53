"""Checkpoint groups for BN whose variables no name marks as BN.

A hand-written BN may name its variables anything (`g`, `b`, `mu`, `s2`, `stat_m`). A
graph layer no named group pairs takes, for each parameter, the unclaimed checkpoint
variable its frozen constant is named after (`blk0/nrm/stat_m`: a TF1 freeze keeps variable
names), else the one whose value it equals (TF2 freezes name constants after the ops that
read them); the variables must sit under one parent (`net/n1/g`, `net/n1/mu`, ...) and
include both moving statistics. By name, a checkpoint of another step still pairs (and its
values then differ); by value, the checkpoint frozen pairs, and one whose values differ in
one parameter only (the others anchor the parent; the one variable left there is it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.detect import BnLayer
from bnaudit.audit.match import Group
from bnaudit.checkpoint.base import Checkpoint
from bnaudit.checkpoint.groups import is_bookkeeping
from bnaudit.names import normalize
from bnaudit.vocab import ROLES, Role

MAX_CANDIDATES = 4096
"""Unclaimed one-dimensional variables read at most: biases and the like, all small."""


def value_groups(layers: list[BnLayer], ckpt: Checkpoint, groups: list[Group]) -> list[Group]:
    """A group for each layer whose constants are unclaimed checkpoint variables."""
    claimed = {key for group in groups for key in group.keys.values()}
    channels = {layer.channels for layer in layers if layer.channels}
    candidates = [
        v.key
        for v in ckpt.variables()
        if v.key not in claimed
        and not is_bookkeeping(v.key)
        and len(v.shape) == 1
        and v.shape[0] in channels
    ][:MAX_CANDIDATES]
    if not candidates:
        return []
    values = {key: np.asarray(ckpt.read(key)) for key in candidates}
    named = {normalize(key): key for key in candidates}
    found: list[Group] = []
    for layer in layers:
        keys = _keys_for(layer, values, named)
        if keys is not None:
            scope = _parent(next(iter(keys.values())))
            found.append(
                Group(
                    scope=scope,
                    names=(scope,),
                    keys={str(role): key for role, key in keys.items()},
                    channels=layer.channels,
                    order=len(groups) + len(found),
                )
            )
    return found


def _keys_for(
    layer: BnLayer, values: dict[str, NDArray[Any]], named: dict[str, str]
) -> dict[Role, str] | None:
    """Role -> the unclaimed variable the layer's constant is named after, else the one it
    equals, all under one parent; None unless both moving statistics are found."""
    keys: dict[Role, str] = {}
    for role in ROLES:
        param = layer.params[role]
        if param.kind != "const" or param.value is None:
            continue
        if normalize(param.source) in named:
            keys[role] = named[normalize(param.source)]
            continue
        ours = param.value.reshape(-1)
        equal = [
            key
            for key, theirs in values.items()
            if theirs.shape == ours.shape and np.array_equal(theirs, ours)
        ]
        if len(equal) == 1:
            keys[role] = equal[0]
    parents = {_parent(key) for key in keys.values()}
    if len(parents) != 1:
        return None
    _complete(layer, keys, values, parents.pop())
    if not {"moving_mean", "moving_variance"} <= keys.keys():
        return None
    return keys


def _complete(
    layer: BnLayer, keys: dict[Role, str], values: dict[str, NDArray[Any]], parent: str
) -> None:
    """Give the one parameter left unmatched (a statistic that went stale) the one variable
    of its shape left under the same parent, when the others anchor the parent (two at least)."""
    missing = [role for role in ROLES if role not in keys and layer.params[role].kind == "const"]
    if len(keys) < 2 or len(missing) != 1:
        return
    shape = np.shape(layer.params[missing[0]].value.reshape(-1))  # type: ignore[union-attr]
    used = set(keys.values())
    left = [
        key
        for key, theirs in values.items()
        if key not in used and _parent(key) == parent and theirs.shape == shape
    ]
    if len(left) == 1:
        keys[missing[0]] = left[0]


def _parent(key: str) -> str:
    return normalize(key).rpartition("/")[0] or key
