"""Pair the BN layers of a frozen graph with the BN variable groups of a checkpoint.

Strategies, strongest first; each pair records the one that made it:
- `map`: the user's `--map OLD=NEW` rules rewrote the graph names into checkpoint names;
- `exact`: a parameter Const of the graph is named like a checkpoint variable;
- `scope`: the scopes agree once framework decorations are removed (`/read`,
  `ReadVariableOp`, Keras' model-name prefix, `.ATTRIBUTES/...`, and the `_1` a traced
  Keras call adds);
- `order`: the remaining layers and groups line up one to one, in order, channel for channel;
- `values`: a remaining layer's statistics equal exactly one remaining group's;
- `shared`: a layer applied a second time reads the same constants as a paired one.

A group without moving statistics (a lone `gamma`: Keras' `LayerScale`; `gamma`/`beta`: a
layer or group normalization not named so) is BN only when the graph shows a BN layer of
that name: such a group pairs by `map`, `exact` or `scope`, and is otherwise left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.detect import BnLayer
from bnaudit.checkpoint.base import Checkpoint
from bnaudit.checkpoint.groups import CheckpointBnGroup, bn_groups
from bnaudit.names import normalize, strip_call_suffix
from bnaudit.vocab import MatchMethod, Role


@dataclass(frozen=True)
class Group:
    """A checkpoint's BN variables for one layer, as matching sees them."""

    scope: str
    """The group's scope or object path."""
    names: tuple[str, ...]
    """Every name the group may be known by (scope, layer name, variable keys)."""
    keys: dict[str, str]
    """Role -> checkpoint key."""
    channels: int | None
    order: int

    @property
    def has_stats(self) -> bool:
        """Whether the group holds a moving mean or variance: only then is it surely BN."""
        return "moving_mean" in self.keys or "moving_variance" in self.keys


@dataclass(frozen=True)
class Pair:
    """A graph layer and its checkpoint group; either side may be missing."""

    layer: BnLayer | None
    group: Group | None
    method: MatchMethod | None
    """`map`, `exact`, `scope`, `order`, `values` or `shared`; None when unpaired."""


def parse_maps(rules: tuple[str, ...]) -> list[tuple[str, str]]:
    """`OLD=NEW` strings as (old, new) pairs; raises ValueError on a malformed rule."""
    pairs = []
    for rule in rules:
        old, sep, new = rule.partition("=")
        if not sep or not old:
            raise ValueError(f"--map {rule!r} is not OLD=NEW (e.g. --map model/=net/)")
        pairs.append((old, new))
    return pairs


def _layer_names(layer: BnLayer) -> set[str]:
    return {layer.scope} | {p.source for p in layer.params.values() if p.kind == "const"}


def pair_layers(
    layers: list[BnLayer],
    groups: list[Group],
    maps: list[tuple[str, str]],
    stats_of: Callable[[Group], NDArray[Any] | None],
) -> list[Pair]:
    """Pair every layer and every group once; unpaired ones come back with the other side None.

    Name strategies look names up in an index of the free groups: time linear in the layers.
    """
    pairs: list[Pair] = []
    free_layers = {id(layer): layer for layer in layers}
    free_groups = {id(group): group for group in groups}

    def pair(layer: BnLayer, group: Group, method: MatchMethod) -> None:
        pairs.append(Pair(layer, group, method))
        del free_layers[id(layer)], free_groups[id(group)]

    def take(
        method: MatchMethod,
        layer_keys: Callable[[BnLayer], set[str]],
        group_keys: Callable[[Group], set[str]],
    ) -> None:
        """Pair each layer whose keys meet exactly one free group's."""
        index: dict[str, list[Group]] = {}
        for group in free_groups.values():
            for key in group_keys(group):
                index.setdefault(key, []).append(group)
        for layer in list(free_layers.values()):
            found = {
                id(g): g
                for k in layer_keys(layer)
                for g in index.get(k, ())
                if id(g) in free_groups
            }
            if len(found) == 1:
                pair(layer, next(iter(found.values())), method)

    if maps:
        take("map", lambda layer: _rewrite(_layer_names(layer), maps), _group_names)
    take("exact", _layer_names, lambda g: set(g.keys.values()))
    normalized = {id(g): {normalize(n) for n in g.names} for g in groups}
    for first_choice in (True, False):
        take("scope", partial(_scope_keys, first_choice=first_choice), lambda g: normalized[id(g)])
    # Keras names a layer once per model, but a checkpoint's variable names may carry the
    # name scopes it was built under (`reduction_A_block_stem_1/.../bn`): the last part.
    take("scope", _layer_leaves, lambda g: {_leaf(n) for n in normalized[id(g)]} - {""})
    for group in [g for g in free_groups.values() if not g.has_stats]:
        del free_groups[id(group)]  # not BN (see above)
    _by_order(pairs, free_layers, free_groups)
    for layer in list(free_layers.values()):
        matches = [g for g in free_groups.values() if _same_values(layer, g, stats_of)]
        if len(matches) == 1:
            pair(layer, matches[0], "values")
    _shared(pairs, free_layers)
    pairs += [Pair(layer, None, None) for layer in free_layers.values()]
    pairs += [Pair(None, group, None) for group in free_groups.values()]
    return pairs


def _shared(pairs: list[Pair], free_layers: dict[int, BnLayer]) -> None:
    """A layer applied twice (shared weights) reads the same constants at each application:
    it takes the group of the paired layer reading them."""
    by_sources = {_const_sources(p.layer): p.group for p in pairs if p.layer is not None}
    for layer in list(free_layers.values()):
        sources = _const_sources(layer)
        if sources and sources in by_sources:
            pairs.append(Pair(layer, by_sources[sources], "shared"))
            del free_layers[id(layer)]


def _by_order(
    pairs: list[Pair], free_layers: dict[int, BnLayer], free_groups: dict[int, Group]
) -> None:
    """Pair the remaining layers and groups in order, channel for channel, when they line up.

    A sub-model applied twice repeats its layers under `name_3` with the same constants:
    one application of each layer lines up, and the repeats take their first's group.
    """
    layers = list(free_layers.values())
    repeats = _repeats([p.layer for p in pairs if p.layer is not None] + layers)
    firsts = [layer for layer in layers if id(layer) not in repeats]
    if not firsts or len(firsts) != len(free_groups):
        return
    ordered = sorted(free_groups.values(), key=lambda g: g.order)
    if not all(_channels_agree(lay, g) for lay, g in zip(firsts, ordered, strict=True)):
        return
    pairs += [Pair(lay, g, "order") for lay, g in zip(firsts, ordered, strict=True)]
    group_of = {id(p.layer): p.group for p in pairs}
    pairs += [Pair(lay, group_of[id(repeats[id(lay)])], "shared") for lay in layers
              if id(lay) in repeats]  # fmt: skip
    free_layers.clear()
    free_groups.clear()


def _scope_keys(layer: BnLayer, first_choice: bool) -> set[str]:
    """The names a graph layer's scope may have in a checkpoint, in two rounds.

    A graph traced from a TF2 function (its constants are `.../resource`) calls each Keras
    layer inside a fresh name scope, so `bn1` appears as `bn1_1`: there the first round
    drops that suffix. Elsewhere `bn_1` is a name of its own, tried as it is first.
    """
    scope = layer.scope
    names = {normalize(scope)}
    if "/" in scope:
        names.add(normalize(scope.split("/", 1)[1]))  # a Keras model's name, `resnet50_1/`
    traced = any(
        p.kind == "const" and p.source.endswith("/resource") for p in layer.params.values()
    )
    stripped = {strip_call_suffix(name) for name in names}
    return (stripped if traced else names) if first_choice else (names if traced else stripped)


def _repeats(layers: list[BnLayer]) -> dict[int, BnLayer]:
    """id(layer) -> the earlier layer it repeats: the same scope but for call suffixes
    (`outer_1/stage2_1/bn_1`, `outer_1/stage2_3/bn_1`) and the same constants."""
    first: dict[tuple[str, bytes], BnLayer] = {}
    repeats: dict[int, BnLayer] = {}
    for layer in layers:
        values = [p.value for p in layer.params.values() if p.kind == "const"]
        if any(v is None for v in values) or not values:
            continue
        scope = "/".join(strip_call_suffix(part) for part in layer.scope.split("/"))
        key = (scope, b"".join(np.ascontiguousarray(v).tobytes() for v in values))
        if key in first:
            repeats[id(layer)] = first[key]
        else:
            first[key] = layer
    return repeats


def _leaf(name: str) -> str:
    """A name's last part, unless it is a number (an object graph's list index)."""
    leaf = name.rpartition("/")[2]
    return "" if leaf.isdigit() else leaf


def _layer_leaves(layer: BnLayer) -> set[str]:
    return {_leaf(n) for first in (True, False) for n in _scope_keys(layer, first)} - {""}


def _const_sources(layer: BnLayer) -> frozenset[tuple[str, str]]:
    return frozenset((role, p.source) for role, p in layer.params.items() if p.kind == "const")


def _group_names(group: Group) -> set[str]:
    return set(group.names) | set(group.keys.values())


def _rewrite(names: set[str], maps: list[tuple[str, str]]) -> set[str]:
    out = set()
    for name in names:
        for old, new in maps:
            if old in name:
                name = name.replace(old, new, 1)
        out.add(name)
    normalized = {normalize(n) for n in out}
    return out | normalized | {strip_call_suffix(n) for n in normalized}


def _channels_agree(layer: BnLayer, group: Group) -> bool:
    return layer.channels is None or group.channels is None or layer.channels == group.channels


def _same_values(
    layer: BnLayer, group: Group, stats_of: Callable[[Group], NDArray[Any] | None]
) -> bool:
    mean = layer.params["moving_mean"].value
    if mean is None or not _channels_agree(layer, group):
        return False
    theirs = stats_of(group)
    return (
        theirs is not None
        and theirs.shape == mean.shape
        and bool(np.allclose(theirs, mean, equal_nan=True))
    )


class GroupValues:
    """The checkpoint's BN values, each tensor read once however often it is compared."""

    def __init__(self, ckpt: Checkpoint) -> None:
        self.ckpt = ckpt
        self._read: dict[str, NDArray[Any]] = {}

    def of(self, group: Group, role: Role) -> NDArray[Any] | None:
        key = group.keys.get(role)
        if key is None:
            return None
        if key not in self._read:
            self._read[key] = np.asarray(self.ckpt.read(key))
        return self._read[key]


def checkpoint_groups(ckpt: Checkpoint) -> list[Group]:
    """The checkpoint's BN groups as pairing sees them (those without moving statistics too)."""
    found = bn_groups(ckpt)
    shapes = {v.key: v.shape for v in ckpt.variables()}
    return [_as_group(g, index, shapes) for index, g in enumerate(found)]


def _as_group(group: CheckpointBnGroup, index: int, shapes: dict[str, tuple[int, ...]]) -> Group:
    channels = None
    for role in ("moving_variance", "moving_mean", "gamma", "beta"):
        if role in group.keys:
            channels = int(np.prod(shapes.get(group.keys[role], (0,))))
            break
    return Group(
        scope=group.scope,
        names=(group.scope, *group.names),
        keys=dict(group.keys),
        channels=channels,
        order=index if group.order is None else group.order,
    )
