"""Names: the scope a node belongs to, and names stripped of framework decorations.

Graph and checkpoint name the same layer differently (`model/bn1/gamma/read` against
`model/bn1/gamma`, `functional_1/bn1_1` against `bn1`); every stage that compares names uses
these two functions, so they agree on what "the same name" means.
"""

from __future__ import annotations

import re
from functools import cache

# Name parts that control flow and BN ops add below the scope a user chose; `cond/output/_N`
# is where lowering a v2 `If` leaves its `Merge`.
_SCOPE_NOISE = re.compile(r"^(cond(_\d+)?|batchnorm|FusedBatchNorm(V\d)?(_\d+)?|output|_\d+)$")
# Lowering a v2 `If`/`While` into the top-level graph prefixes each node of a branch or body
# function with `<caller>/then|else|body|cond/_N/`; the rest is the name it had there.
_LOWERED = re.compile(r"^(?:.*/)?(?:then|else|body|cond)/_\d+/(?=.)")
# The name scope `tf.while_loop` opens around its body, wherever it sits.
_LOOP_SCOPE = re.compile(r"^while(_\d+)?$")
_KERAS_FUNCTIONAL = re.compile(r"^(functional|model|sequential)(_\d+)?/")
_DECORATIONS = re.compile(r"(/read|/ReadVariableOp.*|/\.ATTRIBUTES/.*|/Cast(_\d+)?)$")
CALL_SUFFIX = re.compile(r"_\d+$")
"""The `_1` a Keras layer call adds to its name scope in a traced TF2 function."""


def scope_of(node_name: str) -> str:
    """The layer scope of a node: its parent scope without `cond`/`batchnorm` parts, the
    `while` scopes of loops, or the prefix lowering control flow adds."""
    parts = [p for p in _LOWERED.sub("", node_name).split("/")[:-1] if not _LOOP_SCOPE.match(p)]
    while parts and _SCOPE_NOISE.match(parts[-1]):
        parts.pop()
    return "/".join(parts) or node_name


@cache
def normalize(name: str) -> str:
    """A name with framework decorations removed, for comparing graph and checkpoint names."""
    name = _DECORATIONS.sub("", name)
    name = _KERAS_FUNCTIONAL.sub("", name)
    return name


def strip_call_suffix(name: str) -> str:
    """`bn1_1` -> `bn1`."""
    return CALL_SUFFIX.sub("", name)


def tensor_name(name: str) -> str:
    """A report row's name as the tensor a run fetches: `node` is `node:0`; `node:k` (a
    call's k-th output) is itself."""
    return name if ":" in name else f"{name}:0"


def row_name(tensor: str) -> str:
    """The inverse of `tensor_name`."""
    return tensor.removesuffix(":0") if tensor.count(":") == 1 else tensor
