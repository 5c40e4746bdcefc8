"""REST JSON <-> tensors, following TF Serving's `util/json_tensor.cc`.

Requests: the row format (`instances`, one entry per batch item) and the columnar format
(`inputs`). Responses: `predictions` for row requests (every output must then share the
batch dimension, as in TF Serving) and `outputs` for columnar ones. Floats are written
with 6 significant digits unless that does not round-trip, then with 9 (17 for doubles);
string outputs whose name ends in `_bytes` are written as `{"b64": ...}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from devserver.errors import InvalidArgument, Unimplemented
from devserver.tensors import dtype_string

INSTANCES, INPUTS = "instances", "inputs"
B64 = "b64"
BYTES_SUFFIX = "_bytes"

_INT_RANGES = {
    types_pb2.DT_INT8: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT16: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT32: (-(2**31), 2**31 - 1),
    types_pb2.DT_UINT8: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT64: (-(2**63), 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_FLOAT_LIMITS = {
    types_pb2.DT_FLOAT: ("float", 2**24 - 1, float(np.finfo(np.float32).max)),
    types_pb2.DT_DOUBLE: ("double", 2**53 - 1, float(np.finfo(np.float64).max)),
}


class RequestFormat(Enum):
    """Which JSON layout a predict request used; the response uses the matching one."""

    ROW = "row"
    COLUMNAR = "columnar"


def value_text(value: Any) -> str:
    """A JSON value printed for an error message."""
    return json.dumps(value, separators=(",", ":"), allow_nan=True)


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def parse_body(body: bytes) -> dict[str, Any]:
    """The request document, which must be a JSON object."""
    if not body.strip():
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except UnicodeDecodeError as err:
        raise InvalidArgument(
            f"JSON Parse error: Invalid encoding at offset: {err.start}"
        ) from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"JSON Value: {value_text(document)} Is not object")
    return document


def signature_name(document: Mapping[str, Any]) -> str:
    """The optional `signature_name` key (empty when absent)."""
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {value_text(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def request_arrays(
    document: Mapping[str, Any], infos: Mapping[str, meta_graph_pb2.TensorInfo]
) -> tuple[dict[str, np.ndarray], RequestFormat]:
    """The input arrays of a predict request, typed by the signature's TensorInfo."""
    has_instances, has_inputs = INSTANCES in document, INPUTS in document
    if has_instances and has_inputs:
        raise InvalidArgument(
            f"JSON Value: {value_text(document)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        instances = document[INSTANCES]
        if not isinstance(instances, list):
            raise InvalidArgument(
                f"JSON Value: {value_text(document)} Excepting 'instances' to be an list/array"
            )
        if not instances:
            raise InvalidArgument(
                f"JSON Value: {value_text(document)} No values in 'instances' array"
            )
        return _from_instances(instances, infos), RequestFormat.ROW
    if has_inputs:
        return _from_inputs(document[INPUTS], infos), RequestFormat.COLUMNAR
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _from_instances(
    instances: list[Any], infos: Mapping[str, meta_graph_pb2.TensorInfo]
) -> dict[str, np.ndarray]:
    if not _is_named_object(instances[0]) and len(infos) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    objects = _is_named_object(instances[0])
    names = sorted(infos)
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for index, item in enumerate(instances):
        if objects:
            if not _is_named_object(item):
                raise InvalidArgument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for name, value in item.items():
                if name not in infos:
                    raise InvalidArgument(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {name}"
                    )
                _add_row(rows[name], value, infos[name].dtype, index, name)
            if set(item) != set(names):
                raise InvalidArgument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{value_text(item)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_named_object(item):
                raise InvalidArgument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            _add_row(rows[names[0]], item, infos[names[0]].dtype, index, None)
    return {name: np.stack(parts) for name, parts in rows.items() if parts}


def _add_row(rows: list[np.ndarray], value: Any, dtype: int, index: int, key: str | None) -> None:
    where = f"{index} key: {key}" if key is not None else f"{index}"
    try:
        array = _to_array(value, dtype)
        if rows and rows[0].size != array.size:
            raise InvalidArgument(f"Expecting tensor size: {rows[0].size} but got: {array.size}")
        if rows and rows[0].shape != array.shape:
            raise InvalidArgument(
                f"Expecting shape {_shape(rows[0].shape)} but got: {_shape(array.shape)}"
            )
    except InvalidArgument as err:
        raise InvalidArgument(
            f"Failed to process element: {where} of 'instances' list. "
            f"Error: INVALID_ARGUMENT: {err.message}"
        ) from None
    rows.append(array)


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _from_inputs(
    value: Any, infos: Mapping[str, meta_graph_pb2.TensorInfo]
) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(infos) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        name = next(iter(infos))
        return {name: _to_array(value, infos[name].dtype)}
    arrays = {}
    for name in sorted(infos):
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _to_array(value[name], infos[name].dtype)
    return arrays


def _dense_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _to_array(value: Any, dtype: int) -> np.ndarray:
    """A dense tensor from nested JSON lists, with json_tensor.cc's checks and messages."""
    shape = _dense_shape(value)
    flat: list[Any] = []
    _fill(value, 0, shape, dtype, flat)
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    numpy_dtype = tf.as_dtype(dtype).as_numpy_dtype
    if dtype in _INT_RANGES:
        # TF Serving fills int_val and narrows like a C++ cast; NumPy wraps the same way.
        wide = np.uint64 if dtype == types_pb2.DT_UINT64 else np.int64
        return np.asarray(flat, dtype=wide).astype(numpy_dtype).reshape(shape)
    return np.asarray(flat, dtype=numpy_dtype).reshape(shape)


def _fill(value: Any, level: int, shape: list[int], dtype: int, flat: list[Any]) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {value_text(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        flat.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, flat)


def _type_error(value: Any, dtype: int) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {value_text(value)} Type: {_json_type(value)} is not of expected type: "
        f"{dtype_string(dtype)}"
    )


def _scalar(value: Any, dtype: int) -> Any:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_b64(value):
            try:
                return base64.b64decode(value[B64], validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArgument("Unable to base64 decode") from None
        if isinstance(value, dict):
            raise InvalidArgument(
                f"JSON Value: {value_text(value)} not formatted correctly for base64 data"
            )
        raise _type_error(value, dtype)
    if dtype in _FLOAT_LIMITS:
        if not is_number:
            raise _type_error(value, dtype)
        name, max_int, max_float = _FLOAT_LIMITS[dtype]
        lossy = (
            abs(value) > max_int
            if isinstance(value, int)
            else math.isfinite(value) and abs(value) > max_float
        )
        if lossy:
            raise InvalidArgument(
                f"Cannot convert JSON value: {value_text(value)} to {name} without loss of "
                "precision."
            )
        return value
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not (is_number and isinstance(value, int) and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    raise Unimplemented(
        f"Conversion of JSON Value: {value_text(value)} to type: {dtype_string(dtype)}"
    )


# -- responses ---------------------------------------------------------------------------


def _decimal(value: float, digits: int, single: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    back = float(np.float32(text)) if single else float(text)
    if back != value:
        text = f"{value:.{digits}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _scalar_text(value: Any, dtype: int, as_bytes: bool) -> str:
    if dtype == types_pb2.DT_FLOAT:
        return _decimal(float(value), 9, single=True)
    if dtype in (types_pb2.DT_DOUBLE, types_pb2.DT_HALF):
        return _decimal(float(value), 17, single=False)
    if dtype == types_pb2.DT_BOOL:
        return "true" if value else "false"
    if dtype == types_pb2.DT_STRING:
        raw = bytes(value)
        if as_bytes:
            return json.dumps({B64: base64.b64encode(raw).decode("ascii")})
        return json.dumps(raw.decode("utf-8", "replace"), ensure_ascii=False)
    return str(int(value))


def _tensor_text(array: Any, dtype: int, as_bytes: bool) -> str:
    # Iterating an object array yields bare bytes, a numeric one NumPy scalars.
    if not isinstance(array, np.ndarray):
        return _scalar_text(array, dtype, as_bytes)
    if array.ndim == 0:
        return _scalar_text(array[()], dtype, as_bytes)
    return "[" + ", ".join(_tensor_text(part, dtype, as_bytes) for part in array) + "]"


def _dtype(array: np.ndarray) -> int:
    return int(tf.as_dtype(array.dtype).as_datatype_enum)


def response_json(outputs: Mapping[str, np.ndarray], request_format: RequestFormat) -> str:
    """The predict response body: `predictions` (row) or `outputs` (columnar)."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format is RequestFormat.COLUMNAR:
        texts = {
            name: _tensor_text(outputs[name], _dtype(outputs[name]), name.endswith(BYTES_SUFFIX))
            for name in names
        }
        body = texts[names[0]] if len(names) == 1 else _object(texts)
        return '{"outputs": ' + body + "}"

    batch = -1
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    items = []
    for row in range(batch):
        texts = {
            name: _tensor_text(
                outputs[name][row], _dtype(outputs[name]), name.endswith(BYTES_SUFFIX)
            )
            for name in names
        }
        items.append(texts[names[0]] if len(names) == 1 else _object(texts))
    return '{"predictions": [' + ", ".join(items) + "]}"


def _object(texts: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{json.dumps(name)}: {text}" for name, text in texts.items()) + "}"
