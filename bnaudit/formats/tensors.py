"""Decode TensorFlow `TensorProto` messages and dtypes into numpy arrays."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bnaudit.errors import BnauditError
from bnaudit.formats import protos

# DataType enum value -> numpy dtype, for the types a BN parameter can have.
NUMPY_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.float64),
    3: np.dtype(np.int32),
    4: np.dtype(np.uint8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int8),
    9: np.dtype(np.int64),
    10: np.dtype(np.bool_),
    17: np.dtype(np.uint16),
    19: np.dtype(np.float16),
    22: np.dtype(np.uint32),
    23: np.dtype(np.uint64),
}
DT_BFLOAT16 = 14
DT_HALF = 19

# The repeated field that holds values of each dtype when `tensor_content` is empty.
_VALUE_FIELDS = {
    1: "float_val", 2: "double_val", 3: "int_val", 4: "int_val", 5: "int_val", 6: "int_val",
    9: "int64_val", 10: "bool_val", 17: "int_val", 19: "half_val", 14: "half_val",
    22: "uint32_val", 23: "uint64_val",
}  # fmt: skip


def bfloat16_to_float32(raw: NDArray[np.uint16]) -> NDArray[np.float32]:
    """Widen bfloat16 bit patterns: they are the high half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def shape_of(shape_proto: Any) -> tuple[int, ...] | None:
    """A TensorShapeProto as a tuple (-1 for unknown dimensions), None for unknown rank."""
    if shape_proto.unknown_rank:
        return None
    return tuple(int(d.size) for d in shape_proto.dim)


MAX_FILL_BYTES = 16 * 2**20
"""The most a constant stored as a fill (one value, or a run ending in its last value) may
expand to: far more than any BN parameter, far less than a hostile 2e9-element declaration."""


def element_size(dtype_enum: int) -> int | None:
    """Bytes per element of a numeric DataType, None for others (strings, resources)."""
    if dtype_enum == DT_BFLOAT16:
        return 2
    return NUMPY_DTYPES[dtype_enum].itemsize if dtype_enum in NUMPY_DTYPES else None


def declared_count(tensor: Any) -> int:
    """How many elements a TensorProto's shape declares (exact: Python integers)."""
    return math.prod(max(0, int(d.size)) for d in tensor.tensor_shape.dim)


def listed_count(tensor: Any) -> int:
    """How many values a TensorProto lists in its typed repeated fields."""
    return max(len(getattr(tensor, field)) for field in _LISTS)


_LISTS = sorted(set(_VALUE_FIELDS.values()) | {"string_val"})


class FillBudget:
    """How many bytes the fills of one graph may expand to, all together."""

    def __init__(self, limit: int = 16 * MAX_FILL_BYTES) -> None:
        self.left = limit

    def spend(self, size: int, name: str) -> None:
        """Account for one expanded fill; a BnauditError once the graph's budget is gone."""
        self.left -= size
        if self.left < 0:
            raise BnauditError(
                f"the graph's constant fills (the last {name}) expand to more than "
                f"{16 * MAX_FILL_BYTES // 2**20} MB together; the graph is damaged or hostile"
            )


def decode_tensor(
    tensor: Any, name: str = "a constant", budget: FillBudget | None = None
) -> NDArray[Any] | None:
    """The value of a TensorProto, or None when its dtype is not numeric or it is malformed.

    A fill that would expand beyond `MAX_FILL_BYTES`, or beyond what is left of `budget`,
    raises a BnauditError naming `name`.
    """
    dtype_enum = int(tensor.dtype) % 100  # reference types are plain types + 100
    shape = shape_of(tensor.tensor_shape) or ()
    if any(d < 0 for d in shape):
        return None
    count = declared_count(tensor)
    if dtype_enum == DT_BFLOAT16:
        np_dtype: np.dtype[Any] = np.dtype(np.uint16)
    elif dtype_enum in NUMPY_DTYPES:
        np_dtype = NUMPY_DTYPES[dtype_enum]
    else:
        return None
    content = tensor.tensor_content  # one copy: each access copies the bytes
    if content:
        if len(content) != count * np_dtype.itemsize:
            raise BnauditError(
                f"{name} holds {len(content)} bytes where its shape {list(shape)} takes "
                f"{count * np_dtype.itemsize}; the graph is damaged: export it again"
            )
        values = np.frombuffer(content, dtype=np_dtype.newbyteorder("<"))
        values = values.astype(np_dtype)
    else:
        values = _listed(tensor, dtype_enum, np_dtype)
        if values.size < count and count * np_dtype.itemsize > MAX_FILL_BYTES:
            raise BnauditError(
                f"{name} declares {count:,} elements filled from {values.size} value(s), "
                f"{count * np_dtype.itemsize / 2**20:,.0f} MB once expanded: no BN parameter is "
                "that large; the graph is damaged or hostile"
            )
        if values.size < count and budget is not None:
            budget.spend(count * np_dtype.itemsize, name)
        if 0 < values.size < count:
            # TensorFlow stores a constant fill once, or a run ending in its last value.
            values = np.concatenate([values, np.full(count - values.size, values[-1])])
        elif values.size == 0:
            values = np.zeros(count, dtype=np_dtype)
    if values.size != count:
        return None
    array = values.reshape(shape)
    if dtype_enum == DT_BFLOAT16:
        return bfloat16_to_float32(array)
    return array


def _listed(tensor: Any, dtype_enum: int, np_dtype: np.dtype[Any]) -> NDArray[Any]:
    """The values a TensorProto lists in its typed repeated field."""
    listed = getattr(tensor, _VALUE_FIELDS[dtype_enum])
    if dtype_enum in (DT_HALF, DT_BFLOAT16):
        # half_val holds the 16-bit patterns widened to int32.
        return np.array(listed, dtype=np.int32).astype(np.uint16).view(np_dtype)
    return np.array(listed, dtype=np_dtype)


def encode_tensor(array: NDArray[Any], dtype_enum: int) -> Any:
    """A TensorProto of `dtype_enum` holding `array` (cast to that dtype)."""
    tensor = protos.TensorProto(dtype=dtype_enum)
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=int(size))
    if dtype_enum == DT_BFLOAT16:
        bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
        tensor.tensor_content = (bits >> 16).astype("<u2").tobytes()
    else:
        np_dtype = NUMPY_DTYPES[dtype_enum]
        tensor.tensor_content = np.ascontiguousarray(
            array.astype(np_dtype.newbyteorder("<"))
        ).tobytes()
    return tensor
