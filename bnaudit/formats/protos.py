"""TensorFlow's message definitions, declared here so reading a graph never imports TensorFlow.

The field names and numbers are those of TensorFlow's `.proto` files (graph, node_def,
attr_value, tensor, tensor_shape, function, op_def, versions, tensor_bundle,
trackable_object_graph, saved_model, meta_graph). Only what bnaudit reads is declared; the
protobuf runtime keeps any other field of a binary message as an unknown field, so nothing
is lost. `tests/test_protos.py` checks every declaration against TensorFlow's own.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

# Scalar type names used in the table below, mapped to protobuf field types.
_SCALARS = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "fixed32": _F.TYPE_FIXED32,
}

DATA_TYPES = {
    "DT_INVALID": 0, "DT_FLOAT": 1, "DT_DOUBLE": 2, "DT_INT32": 3, "DT_UINT8": 4,
    "DT_INT16": 5, "DT_INT8": 6, "DT_STRING": 7, "DT_COMPLEX64": 8, "DT_INT64": 9,
    "DT_BOOL": 10, "DT_QINT8": 11, "DT_QUINT8": 12, "DT_QINT32": 13, "DT_BFLOAT16": 14,
    "DT_QINT16": 15, "DT_QUINT16": 16, "DT_UINT16": 17, "DT_COMPLEX128": 18, "DT_HALF": 19,
    "DT_RESOURCE": 20, "DT_VARIANT": 21, "DT_UINT32": 22, "DT_UINT64": 23,
    "DT_FLOAT8_E5M2": 24, "DT_FLOAT8_E4M3FN": 25, "DT_FLOAT8_E4M3FNUZ": 26,
    "DT_FLOAT8_E4M3B11FNUZ": 27, "DT_FLOAT8_E5M2FNUZ": 28, "DT_INT4": 29, "DT_UINT4": 30,
    "DT_INT2": 31, "DT_UINT2": 32, "DT_FLOAT4_E2M1FN": 33,
}  # fmt: skip

# Reference types (`DT_FLOAT_REF`, ...) are the plain type + 100.
_ENUMS: dict[str, dict[str, int]] = {
    "DataType": {
        **DATA_TYPES,
        **{f"{k}_REF": v + 100 for k, v in DATA_TYPES.items() if v},
    },
}

# message name -> [(field name, number, type, repeated)]; a type that is not a scalar is a
# message or enum of this table. "map<K,V>" declares a map field.
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "TensorShapeProto": [
        ("dim", 2, "TensorShapeProto.Dim", True), ("unknown_rank", 3, "bool", False),
    ],
    "TensorShapeProto.Dim": [("size", 1, "int64", False), ("name", 2, "string", False)],
    "ResourceHandleProto": [
        ("device", 1, "string", False), ("container", 2, "string", False),
        ("name", 3, "string", False), ("hash_code", 4, "uint64", False),
        ("maybe_type_name", 5, "string", False),
    ],
    "TensorProto": [
        ("dtype", 1, "DataType", False), ("tensor_shape", 2, "TensorShapeProto", False),
        ("version_number", 3, "int32", False), ("tensor_content", 4, "bytes", False),
        ("half_val", 13, "int32", True), ("float_val", 5, "float", True),
        ("double_val", 6, "double", True), ("int_val", 7, "int32", True),
        ("string_val", 8, "bytes", True), ("scomplex_val", 9, "float", True),
        ("int64_val", 10, "int64", True), ("bool_val", 11, "bool", True),
        ("dcomplex_val", 12, "double", True),
        ("resource_handle_val", 14, "ResourceHandleProto", True),
        ("uint32_val", 16, "uint32", True), ("uint64_val", 17, "uint64", True),
        ("float8_val", 18, "bytes", False),
    ],
    "AttrValue": [
        ("s", 2, "bytes", False), ("i", 3, "int64", False), ("f", 4, "float", False),
        ("b", 5, "bool", False), ("type", 6, "DataType", False),
        ("shape", 7, "TensorShapeProto", False), ("tensor", 8, "TensorProto", False),
        ("list", 1, "AttrValue.ListValue", False), ("func", 10, "NameAttrList", False),
        ("placeholder", 9, "string", False),
    ],
    "AttrValue.ListValue": [
        ("s", 2, "bytes", True), ("i", 3, "int64", True), ("f", 4, "float", True),
        ("b", 5, "bool", True), ("type", 6, "DataType", True),
        ("shape", 7, "TensorShapeProto", True), ("tensor", 8, "TensorProto", True),
        ("func", 9, "NameAttrList", True),
    ],
    "NameAttrList": [("name", 1, "string", False), ("attr", 2, "map<string,AttrValue>", False)],
    "NodeDef": [
        ("name", 1, "string", False), ("op", 2, "string", False), ("input", 3, "string", True),
        ("device", 4, "string", False), ("attr", 5, "map<string,AttrValue>", False),
    ],
    "VersionDef": [
        ("producer", 1, "int32", False), ("min_consumer", 2, "int32", False),
        ("bad_consumers", 3, "int32", True),
    ],
    "OpDef": [
        ("name", 1, "string", False), ("input_arg", 2, "OpDef.ArgDef", True),
        ("output_arg", 3, "OpDef.ArgDef", True), ("control_output", 20, "string", True),
        ("summary", 5, "string", False), ("description", 6, "string", False),
        ("is_stateful", 17, "bool", False),
    ],
    "OpDef.ArgDef": [
        ("name", 1, "string", False), ("description", 2, "string", False),
        ("type", 3, "DataType", False), ("type_attr", 4, "string", False),
        ("number_attr", 5, "string", False), ("type_list_attr", 6, "string", False),
        ("is_ref", 16, "bool", False),
    ],
    "FunctionDef": [
        ("signature", 1, "OpDef", False), ("attr", 5, "map<string,AttrValue>", False),
        ("node_def", 3, "NodeDef", True), ("ret", 4, "map<string,string>", False),
        ("control_ret", 6, "map<string,string>", False),
    ],
    "GradientDef": [("function_name", 1, "string", False), ("gradient_func", 2, "string", False)],
    "FunctionDefLibrary": [
        ("function", 1, "FunctionDef", True), ("gradient", 2, "GradientDef", True),
    ],
    "GraphDef": [
        ("node", 1, "NodeDef", True), ("versions", 4, "VersionDef", False),
        ("version", 3, "int32", False), ("library", 2, "FunctionDefLibrary", False),
    ],
    # Checkpoints (tensor_bundle.proto, trackable_object_graph.proto).
    "TensorSliceProto": [("extent", 1, "TensorSliceProto.Extent", True)],
    "TensorSliceProto.Extent": [("start", 1, "int64", False), ("length", 2, "int64", False)],
    "BundleHeaderProto": [
        ("num_shards", 1, "int32", False), ("endianness", 2, "int32", False),
        ("version", 3, "VersionDef", False),
    ],
    "BundleEntryProto": [
        ("dtype", 1, "DataType", False), ("shape", 2, "TensorShapeProto", False),
        ("shard_id", 3, "int32", False), ("offset", 4, "int64", False),
        ("size", 5, "int64", False), ("crc32c", 6, "fixed32", False),
        ("slices", 7, "TensorSliceProto", True),
    ],
    "TrackableObjectGraph": [("nodes", 1, "TrackableObjectGraph.TrackableObject", True)],
    "TrackableObjectGraph.TrackableObject": [
        ("children", 1, "TrackableObjectGraph.TrackableObject.ObjectReference", True),
        ("attributes", 2, "TrackableObjectGraph.TrackableObject.SerializedTensor", True),
    ],
    "TrackableObjectGraph.TrackableObject.ObjectReference": [
        ("node_id", 1, "int32", False), ("local_name", 2, "string", False),
    ],
    "TrackableObjectGraph.TrackableObject.SerializedTensor": [
        ("name", 1, "string", False), ("full_name", 2, "string", False),
        ("checkpoint_key", 3, "string", False),
    ],
    # Containers a user may pass by mistake (saved_model.proto, meta_graph.proto); a `.meta`
    # beside a checkpoint is also the `meta` reference of a run (saver.proto for SaverDef).
    "SaverDef": [
        ("filename_tensor_name", 1, "string", False), ("save_tensor_name", 2, "string", False),
        ("restore_op_name", 3, "string", False),
    ],
    "MetaGraphDef": [("graph_def", 2, "GraphDef", False), ("saver_def", 3, "SaverDef", False)],
    "SavedModel": [
        ("saved_model_schema_version", 1, "int64", False),
        ("meta_graphs", 2, "MetaGraphDef", True),
    ],
}  # fmt: skip


# Fields that TensorFlow declares inside a `oneof`: such a field keeps its presence, so a value
# set to its default (an attr `b: false`) is written back, not dropped. Without it an
# `is_training: false` read and re-serialized here would reach TensorFlow as an attr with no
# value, which it replaces with the op's default (True).
_ONEOFS: dict[str, tuple[str, tuple[str, ...]]] = {
    "AttrValue": (
        "value",
        ("s", "i", "f", "b", "type", "shape", "tensor", "list", "func", "placeholder"),
    ),
    "TensorSliceProto.Extent": ("has_length_hack", ("length",)),
}


def _add_field(
    msg: descriptor_pb2.DescriptorProto,
    path: str,
    field_spec: tuple[str, int, str, bool],
) -> None:
    """Declare one field on `msg`, whose full name (without the package) is `path`."""
    name, number, type_name, repeated = field_spec
    field = msg.field.add(name=name, number=number)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name.startswith("map<"):
        key_type, value_type = type_name[4:-1].split(",")
        entry = msg.nested_type.add(name=f"{name.title().replace('_', '')}Entry")
        entry.options.map_entry = True
        entry_path = f"{path}.{entry.name}"
        _add_field(entry, entry_path, ("key", 1, key_type, False))
        _add_field(entry, entry_path, ("value", 2, value_type, False))
        field.label = _F.LABEL_REPEATED
        field.type = _F.TYPE_MESSAGE
        field.type_name = f".{_PACKAGE}.{entry_path}"
    elif type_name in _SCALARS:
        field.type = _SCALARS[type_name]
    else:
        field.type = _F.TYPE_ENUM if type_name in _ENUMS else _F.TYPE_MESSAGE
        field.type_name = f".{_PACKAGE}.{type_name}"


_PACKAGE = "tensorflow"


def _build_pool() -> descriptor_pool.DescriptorPool:
    file = descriptor_pb2.FileDescriptorProto(
        name="bnaudit_tensorflow.proto", package=_PACKAGE, syntax="proto3"
    )
    for enum_name, values in _ENUMS.items():
        enum = file.enum_type.add(name=enum_name)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=number)
    declared: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full_name in _MESSAGES:  # outer messages are declared before their nested ones
        outer, _, inner = full_name.rpartition(".")
        parent = declared[outer].nested_type if outer else file.message_type
        declared[full_name] = parent.add(name=inner)
    for full_name, fields in _MESSAGES.items():
        for field_spec in fields:
            _add_field(declared[full_name], full_name, field_spec)
    for full_name, (oneof, members) in _ONEOFS.items():
        message = declared[full_name]
        index = len(message.oneof_decl)
        message.oneof_decl.add(name=oneof)
        for field in message.field:
            if field.name in members:
                field.oneof_index = index
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool


_POOL = _build_pool()


def _message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


GraphDef = _message_class("GraphDef")
NodeDef = _message_class("NodeDef")
AttrValue = _message_class("AttrValue")
TensorProto = _message_class("TensorProto")
FunctionDef = _message_class("FunctionDef")
BundleEntryProto = _message_class("BundleEntryProto")
BundleHeaderProto = _message_class("BundleHeaderProto")
TrackableObjectGraph = _message_class("TrackableObjectGraph")
SavedModel = _message_class("SavedModel")
MetaGraphDef = _message_class("MetaGraphDef")
SaverDef = _message_class("SaverDef")
