"""The checkpoint's side of a run: which reference (`choose`), and one builder for each kind.

- `patched`: the frozen graph with the checkpoint's BN values, in inference mode (`patch`);
- `meta`: the TF1 training graph a Saver wrote beside the checkpoint, restored from it (`meta`);
- `keras`: the `.keras` model given as the checkpoint, run with `training=False`.

`auto` picks `keras` for a `.keras` checkpoint, `meta` when a usable `.meta` is beside a TF1
Saver checkpoint, else `patched`. A builder returns the `Side` to run and the notes that say
what it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.audit.compare import StaticAudit
from bnaudit.errors import BnauditError
from bnaudit.formats.tensors import shape_of
from bnaudit.names import normalize, strip_call_suffix, tensor_name
from bnaudit.report.results import LayerComparison
from bnaudit.run.inputs import Inputs, placeholders
from bnaudit.run.meta import MetaGraph, check_meta_safe, fetch_map, find_meta
from bnaudit.run.options import ReferenceChoice, RunOptions
from bnaudit.run.patch import patched_reference
from bnaudit.run.sides import KerasSide, MetaSide, Reference, Side
from bnaudit.vocab import ReferenceKind


@dataclass(frozen=True)
class Choice:
    """The reference a run uses, and why."""

    kind: ReferenceKind
    reason: str
    meta: MetaGraph | None = None
    """The `.meta` to restore, for `meta`."""


def choose(kind: ReferenceChoice, static: StaticAudit, allow_unsafe: bool = False) -> Choice:
    """The reference for `--reference kind` (`auto` picks), or a BnauditError saying why not.

    `auto`: `keras` for a `.keras` checkpoint, `meta` when a usable TF1 `.meta` is beside a
    Saver checkpoint, else `patched`.
    """
    if kind == "patched":
        return Choice("patched", "asked for with --reference patched")
    is_keras = static.checkpoint_kind == "keras-archive"
    if kind == "keras":
        if not is_keras:
            raise BnauditError(
                f"--reference keras needs a .keras model as the checkpoint, not a "
                f"{static.checkpoint_kind} checkpoint; use --reference patched"
            )
        return Choice("keras", f"{static.checkpoint_path.name} loaded with Keras")
    if kind == "auto" and is_keras:
        return Choice(
            "keras", f"auto: the checkpoint {static.checkpoint_path.name} is a Keras model"
        )
    meta, why = _meta_for(static, allow_unsafe)
    if kind == "meta":
        if meta is None:
            raise BnauditError(
                f"--reference meta needs a usable TF1 .meta beside the checkpoint ({why}); "
                "use --reference patched"
            )
        return Choice("meta", why, meta)
    if meta is not None:
        return Choice("meta", f"auto: {why}", meta)
    return Choice("patched", f"auto: {why}; the frozen graph patched with the checkpoint")


def _meta_for(static: StaticAudit, allow_unsafe: bool) -> tuple[MetaGraph | None, str]:
    if static.checkpoint_kind != "tf1-saver":
        return None, f"a {static.checkpoint_kind} checkpoint has no .meta"
    if any(f.code == "ema-averaged" for row in static.report.layers for f in row.findings):
        return None, (
            "the graph froze moving averages, which a .meta's Saver restores as the raw values"
        )
    flags = training_flags(static)
    inputs = {
        p.name: p.shape
        for p in placeholders(static.graph.graph_def)
        if not p.has_default and not p.is_switch and p.name not in flags
    }
    rows = static.report.layers
    return find_meta(static.checkpoint_path, static.checkpoint_keys, inputs, allow_unsafe, rows)


def build_reference(
    choice: Choice,
    static: StaticAudit,
    inputs: Inputs,
    rows: Sequence[LayerComparison],
    outputs: Sequence[str],
    options: RunOptions,
    layer_inputs: Mapping[str, str] | None = None,
) -> tuple[Reference, list[str]]:
    """The reference `choice` names, built for these inputs and fetches (and the tensors the
    layers normalize, `layer_inputs`: row tensor -> input tensor, where it has them), with
    its notes."""
    layer_inputs = layer_inputs or {}
    if choice.meta is not None:
        return _meta_side(
            static, choice.meta, inputs, rows, outputs, options, list(layer_inputs.values())
        )
    if choice.kind == "keras":
        return _keras_side(static, inputs, rows, outputs, layer_inputs)
    return _patched_side(static, inputs)


def training_flags(static: StaticAudit) -> set[str]:
    """The BN training flags detection found in the frozen graph."""
    return {layer.flag.name for layer in static.layers if layer.flag is not None}


def _patched_side(static: StaticAudit, inputs: Inputs) -> tuple[Side, list[str]]:
    """The frozen graph with the checkpoint's BN values, flags forced False."""
    reference = patched_reference(static.graph, static.layers, static.paired, static.folded)
    switches = {n: v for n, v in inputs.switches.items() if n not in reference.forced_flags}
    forced = reference.forced_flags
    described = [
        "the frozen graph with the checkpoint's BN values, in inference mode"
        + (f" ({', '.join(forced)} forced False)" if forced else "")
        + (f"; {len(static.folded)} folded BN folded again from it" if static.folded else ""),
        *reference.notes,
    ]
    return Side(reference.graph_def, {**inputs.arrays, **switches}, "reference"), described


def _meta_side(
    static: StaticAudit,
    meta: MetaGraph,
    inputs: Inputs,
    rows: Sequence[LayerComparison],
    outputs: Sequence[str],
    options: RunOptions,
    layer_inputs: Sequence[str],
) -> tuple[MetaSide, list[str]]:
    """The training graph of a `.meta`, restored from the checkpoint, its flags fed False."""
    frozen_flags = training_flags(static)
    fetches = fetch_map(meta, rows, outputs)
    nodes = meta.graph.top.nodes
    fetches.update({t: t for t in layer_inputs if t.rpartition(":")[0] in nodes})
    check_meta_safe(meta, fetches.values(), options.allow_unsafe_ops)
    nodes = meta.graph.top.nodes
    flags = [*meta.flags, *(f for f in sorted(frozen_flags) if f in nodes)]
    flags = list(dict.fromkeys(flags))
    feeds: dict[str, NDArray[Any]] = {name: _false(nodes[name]) for name in flags}
    for name, value in inputs.switches.items():
        if name in nodes and name not in frozen_flags:
            feeds.setdefault(name, value)  # a non-BN switch the user fed (dropout, ...)
    for name, value in inputs.arrays.items():
        if name not in nodes:
            raise BnauditError(
                f"the frozen graph's input {name} has no counterpart in {meta.path.name}; "
                "use --reference patched"
            )
        feeds[name] = value
    described = [
        f"{meta.path.name} restored from {static.checkpoint_path.name}"
        + (f", {', '.join(flags)} fed False" if flags else ", no training flag found"),
    ]
    side = MetaSide(
        meta_graph=meta.data,
        checkpoint=str(static.checkpoint_path),
        restore_op=meta.restore_op,
        filename_tensor=meta.filename_tensor,
        feeds=feeds,
        fetches=fetches,
        label=f"reference {meta.path.name}",
    )
    return side, described


def _keras_side(
    static: StaticAudit,
    inputs: Inputs,
    rows: Sequence[LayerComparison],
    outputs: Sequence[str],
    layer_inputs: Mapping[str, str],
) -> tuple[KerasSide, list[str]]:
    """The `.keras` model in inference, each BN layer paired by its checkpoint scope."""
    # A Keras layer applied twice has no single output to expose: such rows are left out.
    applied = Counter(row.checkpoint_scope for row in rows if row.checkpoint_scope)
    fetches = {
        tensor_name(row.name): row.checkpoint_scope or strip_call_suffix(normalize(row.scope))
        for row in rows
        if (row.checkpoint_scope or row.scope) and applied[row.checkpoint_scope or ""] <= 1
    }
    for tensor, layer in list(fetches.items()):
        if tensor in layer_inputs:  # what the layer normalizes: its input in the model
            fetches.setdefault(layer_inputs[tensor], f"input:{layer}")
    fetches.update({f"{name}:0": f"output:{i}" for i, name in enumerate(outputs)})
    side = KerasSide(
        path=static.checkpoint_path,
        inputs=list(inputs.arrays),
        feeds=dict(inputs.arrays),
        fetches=fetches,
        outputs=len(outputs),
        label=f"reference {static.checkpoint_path.name}",
    )
    return side, [f"{static.checkpoint_path.name} run by Keras with training=False"]


def _false(node: Any) -> NDArray[Any]:
    """False in the shape a flag placeholder declares (a scalar when unknown)."""
    shape = shape_of(node.attr["shape"].shape) if "shape" in node.attr else ()
    shape = shape if shape is not None and all(d >= 0 for d in shape) else ()
    return np.zeros(shape, dtype=bool)
