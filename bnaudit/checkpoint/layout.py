"""Where each checkpoint variable sits in its model: the name it was created with and its
position in model order.

Folded BN leaves only a convolution behind; finding its kernel and its BN in the checkpoint
needs names that object-based keys hide (`layer_with_weights-3/kernel/.ATTRIBUTES/...` is
`conv2_block1_1_conv/kernel`) and the order the model created its layers in.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnaudit.checkpoint.base import Checkpoint
from bnaudit.checkpoint.bundled import BundleCheckpoint
from bnaudit.checkpoint.groups import is_bookkeeping, meta_positions, object_paths
from bnaudit.checkpoint.keras import KerasCheckpoint


@dataclass(frozen=True)
class Layout:
    """Variable key -> its name and model-order position, for the variables that have them."""

    names: dict[str, str]
    """Key -> the variable's name (`conv1/kernel`); keys that are names map to themselves."""
    positions: dict[str, int]
    """Key -> position in model order; empty when the checkpoint does not record it."""


def layout(ckpt: Checkpoint) -> Layout:
    """The names and positions `ckpt` records, by format."""
    if isinstance(ckpt, KerasCheckpoint):
        names: dict[str, str] = {}
        positions: dict[str, int] = {}
        for index, layer in enumerate(ckpt.layers):
            for slot, key in enumerate(layer.keys):
                weight = layer.weight_names[slot] if slot < len(layer.weight_names) else str(slot)
                weight = weight.removesuffix(":0")
                names[key] = weight if "/" in weight else f"{layer.name}/{weight}"
                positions[key] = index * 64 + slot
        return Layout(names, positions)
    if isinstance(ckpt, BundleCheckpoint):
        graph = ckpt.object_graph()
        if graph is None:
            keys = {k for k in ckpt.bundle.entries if not is_bookkeeping(k)}
            return Layout({k: k for k in keys}, meta_positions(ckpt.path, keys) or {})
        return _object_layout(ckpt, graph)
    return Layout({}, {})


def _object_layout(ckpt: BundleCheckpoint, graph: object) -> Layout:
    nodes = graph.nodes  # type: ignore[attr-defined]
    _, preorder = object_paths(nodes)
    names: dict[str, str] = {}
    positions: dict[str, int] = {}
    for node_id, position in preorder.items():
        for attr in nodes[node_id].attributes:
            if attr.name == "VARIABLE_VALUE" and attr.checkpoint_key in ckpt.bundle.entries:
                key = attr.checkpoint_key
                names[key] = attr.full_name.removesuffix(":0") or key
                positions[key] = position
    return Layout(names, positions)
