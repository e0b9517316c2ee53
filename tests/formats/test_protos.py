"""bnaudit's own message definitions must agree with TensorFlow's, field for field."""

from __future__ import annotations

import pytest

from bnaudit.formats import protos


def _tf_descriptor(name: str):  # type: ignore[no-untyped-def]
    from google.protobuf import descriptor_pool
    from tensorflow.core.framework import graph_pb2, types_pb2  # noqa: F401
    from tensorflow.core.protobuf import (  # noqa: F401
        meta_graph_pb2,
        saved_model_pb2,
        tensor_bundle_pb2,
        trackable_object_graph_pb2,
    )

    return descriptor_pool.Default().FindMessageTypeByName(f"tensorflow.{name}")


def _all_messages() -> list[str]:
    return list(protos._MESSAGES)


@pytest.mark.parametrize("name", _all_messages())
def test_fields_match_tensorflow(name: str) -> None:
    ours = protos._POOL.FindMessageTypeByName(f"tensorflow.{name}")
    theirs = _tf_descriptor(name)
    for field in ours.fields:
        other = theirs.fields_by_name[field.name]
        assert field.number == other.number, field.full_name
        if field.name == "endianness":
            continue  # an enum there, read as its integer value here
        assert field.type == other.type, field.full_name
        assert field.is_repeated == other.is_repeated, field.full_name
        ours_oneof = field.containing_oneof.name if field.containing_oneof else None
        theirs_oneof = other.containing_oneof.name if other.containing_oneof else None
        assert ours_oneof == theirs_oneof, field.full_name
        if field.message_type is not None:
            assert field.message_type.name == other.message_type.name


def test_data_types_match_tensorflow() -> None:
    from tensorflow.core.framework import types_pb2

    for name, number in protos.DATA_TYPES.items():
        assert types_pb2.DataType.Value(name) == number


def test_graph_bytes_round_trip_through_tensorflow_parser() -> None:
    """A GraphDef parsed here and re-serialized is what TensorFlow parses and writes."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        y = tf.identity(x * tf.constant([1.0, 2.0, 3.0]), name="y")
        tf.linalg.matmul(y, tf.ones([3, 1]), transpose_a=False, name="z")  # attrs set to default
    data = graph.as_graph_def().SerializeToString()
    ours = protos.GraphDef.FromString(data)
    theirs = tf.compat.v1.GraphDef.FromString(ours.SerializeToString())
    assert [n.name for n in theirs.node] == [n.name for n in ours.node]
    assert theirs.SerializeToString(deterministic=True) == tf.compat.v1.GraphDef.FromString(
        data
    ).SerializeToString(deterministic=True)
