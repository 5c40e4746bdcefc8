"""TensorProto <-> NumPy conversions and the shape/dtype wording TF Serving uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from devserver.errors import InvalidArgument

# The typed repeated field `Tensor::AsProtoField` fills for each dtype.
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}

# TensorFlow's DataTypeString() differs from the Python dtype name for these.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}


def dtype_string(dtype: int) -> str:
    """TensorFlow's C++ name of a DataType enum (`float`, `uint8`, `string`...)."""
    try:
        name = tf.as_dtype(dtype).name
    except TypeError:
        return types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else "?"
    return _TF_TYPE_NAMES.get(str(name), str(name))


def dtype_of(array: np.ndarray) -> int:
    """The DataType enum of a NumPy array (object arrays hold strings)."""
    return int(tf.as_dtype(array.dtype).as_datatype_enum)


def to_ndarray(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    """A request tensor as NumPy; malformed protos fail like TF Serving's FromProto."""
    try:
        if proto.dtype == types_pb2.DT_INVALID:
            raise ValueError("no dtype")
        array: np.ndarray = tf.make_ndarray(proto)
        return array
    except Exception:
        raise InvalidArgument(f"tensor parsing error: {alias}") from None


def as_proto_field(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A response tensor the way TF Serving's Predict writes it: typed value fields.

    `tf.make_tensor_proto` would use `tensor_content` for numbers; TF Serving answers
    with `Tensor::AsProtoField` (float_val, int_val, string_val...), and clients that
    decode responses without TensorFlow must see that same layout here.
    """
    dtype = dtype_of(array)
    field = _VALUE_FIELD.get(dtype)
    if field is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape_proto(array.shape))
    flat = array.ravel()
    values = flat.tolist() if dtype != types_pb2.DT_STRING else [bytes(v) for v in flat]
    getattr(proto, field).extend(values)
    return proto


def shape_proto(shape: Sequence[int]) -> tensor_shape_pb2.TensorShapeProto:
    """A TensorShapeProto for a concrete shape."""
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
    )


def shape_string(shape: tensor_shape_pb2.TensorShapeProto | Sequence[int]) -> str:
    """`[-1,112,112,3]`; `[?]` for an unknown rank."""
    if isinstance(shape, tensor_shape_pb2.TensorShapeProto):
        if shape.unknown_rank:
            return "[?]"
        dims: list[int] = [d.size for d in shape.dim]
    else:
        dims = [int(d) for d in shape]
    return "[" + ",".join(str(d) for d in dims) + "]"


def shape_compatible(expected: tensor_shape_pb2.TensorShapeProto, actual: Sequence[int]) -> bool:
    """Whether a concrete shape fits a signature shape (-1 matches any size)."""
    if expected.unknown_rank:
        return True
    if len(expected.dim) != len(actual):
        return False
    return all(d.size < 0 or d.size == a for d, a in zip(expected.dim, actual, strict=True))
