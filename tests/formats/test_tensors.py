"""TensorProto decoding must give what tf.make_ndarray gives."""

from __future__ import annotations

import numpy as np
import pytest

from bnaudit.formats import protos
from bnaudit.formats.tensors import decode_tensor

CASES = [
    np.array([1.5, -2.0, 3.25], dtype=np.float32),
    np.arange(12, dtype=np.float64).reshape(3, 4),
    np.array([0.1, 0.2], dtype=np.float16),
    np.array([[1, 2], [3, 4]], dtype=np.int32),
    np.array([7, -8], dtype=np.int64),
    np.array(True),
    np.full((4,), 0.5, dtype=np.float32),  # stored once, as a fill
    np.float32(1e-3),
]


@pytest.mark.parametrize("value", CASES, ids=lambda v: f"{np.asarray(v).dtype}{np.shape(v)}")
@pytest.mark.parametrize("as_content", [True, False])
def test_decode_matches_tensorflow(value: np.ndarray, as_content: bool) -> None:
    import tensorflow as tf

    proto = tf.make_tensor_proto(value) if as_content else _listed(tf, value)
    ours = decode_tensor(protos.TensorProto.FromString(proto.SerializeToString()))
    theirs = tf.make_ndarray(proto)
    assert ours is not None
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def _listed(tf, value):  # type: ignore[no-untyped-def]
    """The same value as a Const op stores small tensors: in the typed *_val fields."""
    graph = tf.Graph()
    with graph.as_default():
        const = tf.constant(value)
    return const.op.get_attr("value")


def test_bfloat16_widens_to_float32() -> None:
    import tensorflow as tf

    proto = tf.make_tensor_proto(np.array([1.0, -0.5, 3.0]), dtype=tf.bfloat16)
    ours = decode_tensor(protos.TensorProto.FromString(proto.SerializeToString()))
    assert ours is not None
    np.testing.assert_array_equal(ours, np.array([1.0, -0.5, 3.0], dtype=np.float32))


def test_string_tensor_is_not_decoded() -> None:
    proto = protos.TensorProto(dtype=7, string_val=[b"a"])
    assert decode_tensor(proto) is None
