"""The words bnaudit uses everywhere: parameter roles, modes, parameter kinds, match methods.

Each is a `Literal` type, so mypy checks every comparison, with a tuple of its values for
iteration and for the CLI's choices. The strings are the JSON contract's.
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["gamma", "beta", "moving_mean", "moving_variance"]
"""A BN parameter; the order is the order reports list them in."""
ROLES: tuple[Role, ...] = get_args(Role)
STAT_ROLES: tuple[Role, ...] = ("moving_mean", "moving_variance")
"""The moving statistics: what training updates and inference reads."""

Mode = Literal["inference", "training", "conditional", "folded"]
"""How a layer normalizes: stored statistics, the batch's, chosen by a flag, or folded away
into a convolution (compare only)."""

ParamKind = Literal["const", "batch", "absent", "variable", "other"]
"""Where a parameter's value comes from: a baked-in constant, the batch's statistics, nowhere
(scale/center off), a live variable (the graph was not frozen), or anything else."""

MatchMethod = Literal["map", "exact", "scope", "order", "values", "shared", "folded"]
"""How a graph layer was paired with a checkpoint group (the README's pairing table)."""
MATCH_METHODS: tuple[MatchMethod, ...] = get_args(MatchMethod)

ReferenceKind = Literal["patched", "meta", "keras"]
"""What a run compares the frozen graph against."""
REFERENCE_CHOICES: tuple[str, ...] = ("auto", *get_args(ReferenceKind))

Status = Literal["ok", "warning", "error"]
"""A layer's worst finding (info counts as ok)."""

CheckpointKind = Literal[
    "tf1-saver", "tf2-object", "saved-model", "keras-h5", "keras-legacy-h5", "keras-archive"
]
"""What a checkpoint is: a Saver bundle, an object-based bundle, a SavedModel's variables, a
Keras 3 weights file, a tf-keras `.h5`, a `.keras` archive."""
