"""Group a checkpoint's variables into batch-normalization layers.

A group is one BN layer's `gamma`, `beta`, `moving_mean` and `moving_variance` (any of them
may be absent). How a layer is recognised depends on what the checkpoint records:

- Names (TF1 `Saver` keys, legacy tf-keras `.h5`): the variables under one scope whose last
  name component is a BN name. Distinctive names (`gamma`, `beta`, `moving_mean`,
  `moving_variance`, `moving_var`, `pop_mean`, `pop_var`, `running_mean`, `running_var`)
  make a group alone; generic ones (`scale`, `offset`, `mean`, `variance`) count only beside
  a distinctive one, or when a parameter (`scale`/`offset`) and a statistic
  (`mean`/`variance`) share the scope, so Keras' `Normalization` (mean, variance, count) is
  not taken for BN. Scopes named like layer/group/instance normalization are skipped: they
  have gamma and beta too.
- Object graph (TF2 checkpoints, SavedModels): the same names, as the children of one object;
  the object's path (`model/layer_with_weights-1`) or, when the variables' full names share a
  layer prefix, the Keras layer name is the scope.
- Keras 3 `.weights.h5`: variables are numbered, not named. A layer is BN when config.json
  says `BatchNormalization` (`.keras`) or its group is named `batch_normalization[_k]`. Roles
  follow creation order (gamma if scale, beta if center, moving_mean, moving_variance, then
  renorm's three). Without a config, 4 vars are all four, 2 are the statistics, and for 3 the
  first is taken as gamma (center=False) when its values are closer to 1 than to 0, else as
  beta (scale=False, the more common setting); the guess is added to `Checkpoint.notes`.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnaudit.checkpoint.base import Checkpoint
from bnaudit.checkpoint.bundled import BundleCheckpoint
from bnaudit.checkpoint.keras import KerasCheckpoint, KerasLayer
from bnaudit.errors import BnauditError
from bnaudit.formats.metagraph import metas_beside, read_meta_graph_def
from bnaudit.formats.ops import VARIABLE_OPS
from bnaudit.vocab import ROLES

_STRONG = {
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "moving_mean",
    "moving_variance": "moving_variance",
    "moving_var": "moving_variance",
    "pop_mean": "moving_mean",
    "pop_var": "moving_variance",
    "population_mean": "moving_mean",
    "population_variance": "moving_variance",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
_WEAK = {"scale": "gamma", "offset": "beta", "mean": "moving_mean", "variance": "moving_variance"}
_NOT_BN_SCOPE = re.compile(r"(layer|group|instance)_?norm", re.IGNORECASE)
_OPTIMIZER_PART = re.compile(
    r"^(Adam|Adam_\d+|AdamW(_\d+)?|Momentum|RMSProp(_\d+)?|Adagrad|Adadelta(_\d+)?|Ftrl(_\d+)?|"
    r"Nadam(_\d+)?|LARS|ExponentialMovingAverage|optimizer|\.OPTIMIZER_SLOT)$"
)
_SKIP_KEYS = {"global_step", "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"}
_MAX_OBJECT_DEPTH = 256
_SKIP_EDGES = {"optimizer", "_optimizer"}  # object-graph children that lead to optimizer state
_KERAS_BN_CLASSES = {"BatchNormalization", "SyncBatchNormalization"}
_KERAS_BN_GROUP = re.compile(r"(sync_)?batch_normalization(_\d+)?")


@dataclass(frozen=True)
class CheckpointBnGroup:
    """The variables of one BN layer found in a checkpoint."""

    scope: str
    """The layer's scope: TF1 `model/bn1`, object path or Keras layer name, h5 layer name."""
    keys: dict[str, str]
    """Role (`gamma`, `beta`, `moving_mean`, `moving_variance`) -> key for `Checkpoint.read`."""
    order: int | None
    """Position among the checkpoint's BN groups in model order, None when unknown."""
    names: tuple[str, ...]
    """Other names of the layer usable for matching (object path, h5 group, key scope)."""


def _roles(leaves: Iterable[tuple[str, str]]) -> dict[str, str] | None:
    """Role -> key for one scope's (leaf name, key) pairs, or None when it is not BN."""
    strong: dict[str, str] = {}
    weak: dict[str, str] = {}
    for leaf, key in leaves:
        leaf = leaf.removesuffix(":0")
        if leaf in _STRONG:
            strong.setdefault(_STRONG[leaf], key)
        elif leaf in _WEAK:
            weak.setdefault(_WEAK[leaf], key)
    has_param = bool({"gamma", "beta"} & weak.keys())
    has_stat = bool({"moving_mean", "moving_variance"} & weak.keys())
    if not strong and not (has_param and has_stat):
        return None
    roles = {**weak, **strong}  # a distinctive name wins over a generic one
    return {role: roles[role] for role in ROLES if role in roles}


def is_bookkeeping(path: str) -> bool:
    """True for optimizer slots, step counters and other variables that are not the model's."""
    return path in _SKIP_KEYS or any(_OPTIMIZER_PART.match(part) for part in path.split("/"))


def _ranked(positions: list[int | None]) -> list[int | None]:
    """Turn positions into 0-based ranks; all None when any position is unknown."""
    if len(positions) == 1:
        return [0]
    if any(p is None for p in positions):
        return [None] * len(positions)
    ordered = sorted(range(len(positions)), key=lambda i: positions[i])  # type: ignore[arg-type,return-value]
    ranks: list[int | None] = [0] * len(positions)
    for rank, index in enumerate(ordered):
        ranks[index] = rank
    return ranks


def _by_names(
    paths: dict[str, str], positions: dict[str, int] | None = None
) -> list[CheckpointBnGroup]:
    """Groups from variable path -> key, scopes being the path minus its last component."""
    scopes: dict[str, list[tuple[str, str]]] = {}
    for path, key in paths.items():
        if is_bookkeeping(path):
            continue
        scope, _, leaf = path.rpartition("/")
        scopes.setdefault(scope, []).append((leaf, key))
    found: list[tuple[str, dict[str, str]]] = []
    for scope, leaves in scopes.items():
        roles = _roles(leaves)
        if roles and not _NOT_BN_SCOPE.search(scope.rpartition("/")[2]):
            found.append((scope, roles))
    pos: list[int | None] = []
    for _, roles in found:
        known = [positions.get(k) for k in roles.values()] if positions is not None else [None]
        pos.append(min(known) if None not in known else None)  # type: ignore[type-var]
    ranks = _ranked(pos)
    groups = [
        CheckpointBnGroup(scope, roles, rank, (scope,))
        for (scope, roles), rank in zip(found, ranks, strict=True)
    ]
    return sorted(groups, key=lambda g: (g.order is None, g.order or 0, g.scope))


def meta_positions(prefix: Path, keys: set[str]) -> dict[str, int] | None:
    """Variable name -> creation position, from the training graph saved beside the prefix.

    A `.meta` of another step in the same directory holds the same graph when it defines
    every variable.
    """
    for meta in metas_beside(prefix):
        try:
            graph = read_meta_graph_def(meta)[1].graph_def
        except BnauditError:  # a damaged .meta only costs the order, never the audit
            continue
        positions: dict[str, int] = {}
        for node in graph.node:
            if node.op in VARIABLE_OPS:
                positions.setdefault(node.name, len(positions))
        if keys <= positions.keys():
            return positions
    return None


def _saver_groups(ckpt: BundleCheckpoint) -> list[CheckpointBnGroup]:
    keys = {k for k in ckpt.bundle.entries if not is_bookkeeping(k)}
    return _by_names({k: k for k in ckpt.bundle.entries}, meta_positions(ckpt.path, keys))


def object_paths(nodes: Any) -> tuple[dict[int, str], dict[int, int]]:
    """Each object's shortest path from the root, and its position in model order."""
    # Breadth first, like TensorFlow naming its keys, so paths are the shortest ones; the
    # optimizer's references to the same variables are not paths to a layer.
    paths = {0: ""}
    depth = {0: 0}
    queue = deque([0])
    while queue:
        node_id = queue.popleft()
        for ref in nodes[node_id].children:
            if ref.local_name in _SKIP_EDGES or ref.node_id in paths:
                continue
            depth[ref.node_id] = depth[node_id] + 1
            if depth[ref.node_id] > _MAX_OBJECT_DEPTH:
                raise BnauditError(
                    f"the checkpoint's object graph nests objects more than "
                    f"{_MAX_OBJECT_DEPTH} deep; no model does: pass an intact checkpoint"
                )
            paths[ref.node_id] = f"{paths[node_id]}/{ref.local_name}".lstrip("/")
            queue.append(ref.node_id)
    # Depth first in child order gives model order (layers are tracked in call order).
    preorder: dict[int, int] = {}
    stack = [0]
    while stack:
        node_id = stack.pop()
        if node_id in preorder:
            continue
        preorder[node_id] = len(preorder)
        children = [r.node_id for r in nodes[node_id].children if r.local_name not in _SKIP_EDGES]
        stack.extend(c for c in reversed(children) if c not in preorder)
    return paths, preorder


def _object_groups(ckpt: BundleCheckpoint, graph: Any) -> list[CheckpointBnGroup]:
    """Groups of an object-based checkpoint: objects whose variable children have BN names."""
    nodes = graph.nodes
    entries = ckpt.bundle.entries
    paths, preorder = object_paths(nodes)

    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    found: list[tuple[int, dict[str, str], list[str], list[str]]] = []
    for node_id in paths:
        leaves: list[tuple[str, str]] = []
        full_names: dict[str, str] = {}
        for ref in nodes[node_id].children:
            for attr in nodes[ref.node_id].attributes:
                if attr.name == "VARIABLE_VALUE" and attr.checkpoint_key in entries:
                    leaves.append((ref.local_name, attr.checkpoint_key))
                    full_names[attr.checkpoint_key] = attr.full_name.removesuffix(":0")
        roles = _roles(leaves)
        if roles is None:
            continue
        prefixes = sorted({full_names[k].rpartition("/")[0] for k in roles.values()})
        # A key names the layer too when TensorFlow reached the variable through it
        # (not through the optimizer): `model/_operations/2/moving_mean/.ATTRIBUTES/...`.
        key_scopes = [
            key[: -len(f"/{leaf}{suffix}")]
            for leaf, key in leaves
            if key in roles.values() and key.endswith(f"/{leaf}{suffix}")
        ]
        found.append((node_id, roles, prefixes, key_scopes))

    layer_names = [p[0] if len(p) == 1 and p[0] else None for _, _, p, _ in found]
    ranks = _ranked([preorder.get(node_id) for node_id, _, _, _ in found])
    groups = []
    for (node_id, roles, _, key_scopes), layer_name, rank in zip(
        found, layer_names, ranks, strict=True
    ):
        path = paths[node_id]
        unique = layer_name is not None and layer_names.count(layer_name) == 1
        scope = layer_name if unique and layer_name else path
        if _NOT_BN_SCOPE.search(scope.rpartition("/")[2]):
            continue
        names = tuple(dict.fromkeys(n for n in (scope, path, layer_name, *key_scopes) if n))
        groups.append(CheckpointBnGroup(scope, roles, rank, names))
    if not groups:
        return _by_full_names(nodes, entries, preorder)
    # Ranked again among the groups kept: a layer norm left out leaves no gap.
    ranks = _ranked([g.order for g in groups])
    groups = [dataclasses.replace(g, order=r) for g, r in zip(groups, ranks, strict=True)]
    return sorted(groups, key=lambda g: (g.order is None, g.order or 0, g.scope))


def _by_full_names(nodes: Any, entries: Any, preorder: dict[int, int]) -> list[CheckpointBnGroup]:
    """Groups by the variables' own names, for an object graph that does not nest them under
    their layers: a Keras 3 `model.export()` SavedModel lists its variables in flat lists
    (`variables/0`, `_all_variables/3`), each variable recording its name (`bn1/gamma`)."""
    paths: dict[str, str] = {}
    positions: dict[str, int] = {}
    for node_id in sorted(preorder, key=preorder.__getitem__):
        for attr in nodes[node_id].attributes:
            name = attr.full_name.removesuffix(":0")
            key = attr.checkpoint_key
            if attr.name == "VARIABLE_VALUE" and key in entries and name and name not in paths:
                paths[name] = key
                positions[key] = preorder[node_id]
    return _by_names(paths, positions)


def _keras3_roles(ckpt: KerasCheckpoint, layer: KerasLayer) -> dict[str, str] | None:
    """Role -> key for one Keras 3 BN layer, from its config or from its variable count."""
    config = layer.config or {}
    count = len(layer.keys)
    if layer.config is not None:
        names = [
            n
            for n, on in (
                ("gamma", config.get("scale", True)),
                ("beta", config.get("center", True)),
            )
            if on
        ]
        names += ["moving_mean", "moving_variance"]
        if config.get("renorm"):
            names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
        if len(names) == count:
            return {n: k for n, k in zip(names, layer.keys, strict=True) if n in ROLES}
    base = count - 3 if count > 4 else count  # renorm adds three variables after the four
    if base == 4:
        names = list(ROLES)
    elif base == 2:
        names = ["moving_mean", "moving_variance"]
    elif base == 3:
        first = np.asarray(ckpt.read(layer.keys[0]), dtype=np.float64)
        finite = first[np.isfinite(first)]
        gamma_like = finite.size > 0 and np.abs(finite - 1).mean() < np.abs(finite).mean()
        names = ["gamma" if gamma_like else "beta", "moving_mean", "moving_variance"]
        note = (
            f"{layer.name}: 3 BatchNormalization variables and no config; took the first as "
            f"{names[0]} ({'center' if gamma_like else 'scale'}=False) from its values"
        )
        if note not in ckpt.notes:  # bn_groups may be called more than once
            ckpt.notes.append(note)
    else:
        return None
    return {n: k for n, k in zip(names, layer.keys, strict=False)}


def _keras_groups(ckpt: KerasCheckpoint) -> list[CheckpointBnGroup]:
    if ckpt.kind == "keras-legacy-h5":
        paths: dict[str, str] = {}
        positions: dict[str, int] = {}
        for index, layer in enumerate(ckpt.layers):
            for weight_name, key in zip(layer.weight_names, layer.keys, strict=True):
                name = weight_name.removesuffix(":0")
                if "/" not in name:
                    name = f"{layer.name}/{name}"
                paths[name] = key
                positions[key] = index
        groups = _by_names(paths, positions)
        for group in groups:  # the scope of legacy weight names is the layer name
            object.__setattr__(group, "names", (group.scope,))
        return groups
    found: list[tuple[KerasLayer, dict[str, str]]] = []
    for layer in ckpt.layers:
        base = layer.path.rpartition("/")[2]
        if layer.class_name is not None:
            is_bn = layer.class_name in _KERAS_BN_CLASSES
        else:
            is_bn = _KERAS_BN_GROUP.fullmatch(base) is not None
        if not is_bn or layer.path.startswith("optimizer"):
            continue
        roles = _keras3_roles(ckpt, layer)
        if roles:
            found.append((layer, roles))
    # Files are walked in model order already (groups numbered as the model lists its layers).
    return [
        CheckpointBnGroup(layer.name, roles, rank, tuple(dict.fromkeys((layer.name, layer.path))))
        for rank, (layer, roles) in enumerate(found)
    ]


def bn_groups(ckpt: Checkpoint) -> list[CheckpointBnGroup]:
    """The checkpoint's BN layers in model order when known, else sorted by scope."""
    if isinstance(ckpt, KerasCheckpoint):
        return _keras_groups(ckpt)
    if isinstance(ckpt, BundleCheckpoint):
        graph = ckpt.object_graph()
        if graph is not None:
            return _object_groups(ckpt, graph)
        return _saver_groups(ckpt)
    raise TypeError(f"unknown checkpoint type {type(ckpt).__name__}")
