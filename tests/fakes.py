"""Small stand-ins tests build inputs from: a checkpoint held in memory, and GraphDef nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.checkpoint.base import Checkpoint, VariableInfo
from bnaudit.formats import protos
from bnaudit.formats.tensors import encode_tensor

F32 = protos.DATA_TYPES["DT_FLOAT"]
I32 = protos.DATA_TYPES["DT_INT32"]
BOOL = protos.DATA_TYPES["DT_BOOL"]


class MemoryCheckpoint(Checkpoint):
    """A checkpoint of the arrays given, by key."""

    def __init__(self, arrays: dict[str, NDArray[Any]]) -> None:
        self.arrays = arrays
        self.notes = []

    def variables(self) -> list[VariableInfo]:
        return [VariableInfo(k, "float32", v.shape) for k, v in sorted(self.arrays.items())]

    def read(self, key: str) -> NDArray[Any]:
        return self.arrays[key]


def node(nodes: Any, name: str, op: str, *inputs: str, **funcs: str) -> Any:
    """A node appended to `nodes`; keyword arguments name the functions it calls."""
    added = nodes.add(name=name, op=op, input=list(inputs))
    for attr, function in funcs.items():
        added.attr[attr].func.name = function
    return added


def const(nodes: Any, name: str, value: Any, dtype: int = F32) -> Any:
    """A Const node holding `value` as `dtype`."""
    added = node(nodes, name, "Const")
    added.attr["dtype"].type = dtype
    added.attr["value"].tensor.CopyFrom(encode_tensor(np.asarray(value), dtype))
    return added
