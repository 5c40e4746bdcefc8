"""TF Serving's messages for the model contract: building requests and checking signatures.

Pure functions over protobuf messages (no gRPC, no I/O): `tfserving.TFServingPredictor` sends
what these build, and the B1 benchmark times `predict_request` itself. Only message modules that
exist both in `tensorflow-protobuf` (the gateway's image) and in `tensorflow-serving-api` +
TensorFlow (the main environment) are imported; never `tensorflow` itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import wrappers_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from gateway import contract
from gateway.contract import (
    DESCRIBE_SIGNATURE,
    DESCRIPTION_OUTPUT,
    SCORES_OUTPUT,
    SERVING_SIGNATURE,
    ContractError,
)
from gateway.errors import ModelError, ModelIncompatible
from gateway.predictor import ModelInfo


def uint8_tensor(images: np.ndarray) -> tensor_pb2.TensorProto:
    """A uint8 TensorProto carrying the raw bytes in `tensor_content` (never per-value lists)."""
    array = np.ascontiguousarray(images, dtype=np.uint8)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
    )
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_UINT8, tensor_shape=shape, tensor_content=array.tobytes()
    )


def float_array(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a float32/float64 TensorProto (packed content or value lists) to an array."""
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    dtype: type[np.floating[Any]]
    if tensor.dtype == types_pb2.DT_FLOAT:
        dtype, values = np.float32, tensor.float_val
    elif tensor.dtype == types_pb2.DT_DOUBLE:
        dtype, values = np.float64, tensor.double_val
    else:
        raise ModelError(f"the model answered {types_pb2.DataType.Name(tensor.dtype)} scores")
    if tensor.tensor_content:
        array = np.frombuffer(tensor.tensor_content, dtype=dtype)
    else:
        array = np.asarray(values, dtype=dtype)
    if array.size != int(np.prod(shape)):
        raise ModelError(f"the model answered {array.size} values for shape {shape}")
    return array.reshape(shape).astype(np.float64)


def predict_request(info: ModelInfo, images: np.ndarray) -> predict_pb2.PredictRequest:
    """The Predict request scoring a batch of uint8 NxHxWx3 images with the described version.

    The request is pinned to that version (`model_spec.version`): its scores are then the
    ones `info.labels` name, whichever replica answers.
    """
    request = predict_pb2.PredictRequest(output_filter=[info.scores_output])
    request.model_spec.name = info.name
    request.model_spec.signature_name = info.signature
    request.model_spec.version.CopyFrom(wrappers_pb2.Int64Value(value=info.version))
    request.inputs[info.input_name].CopyFrom(uint8_tensor(images))
    return request


def metadata_request(
    model: str, label: str | None = None
) -> get_model_metadata_pb2.GetModelMetadataRequest:
    """The GetModelMetadata request for the signatures of a labelled (or the newest) version."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    if label is not None:
        request.model_spec.version_label = label
    return request


def describe_request(
    model: str, version: int, input_name: str, height: int, width: int
) -> predict_pb2.PredictRequest:
    """The Predict request on `describe` (one black image) that returns the description.

    Pinned to the version the metadata came from: another replica may serve another version.
    """
    request = predict_pb2.PredictRequest(output_filter=[DESCRIPTION_OUTPUT])
    request.model_spec.name = model
    request.model_spec.version.CopyFrom(wrappers_pb2.Int64Value(value=version))
    request.model_spec.signature_name = DESCRIBE_SIGNATURE
    request.inputs[input_name].CopyFrom(
        uint8_tensor(np.zeros((1, height, width, 3), dtype=np.uint8))
    )
    return request


def image_input(model: str, signature_name: str, signature: Any) -> tuple[str, int, int]:
    """The signature's single uint8 [-1, H, W, 3] input as (name, H, W), or ModelIncompatible."""
    if len(signature.inputs) != 1:
        raise ModelIncompatible(
            f"model {model!r}: signature {signature_name!r} has inputs "
            f"{sorted(signature.inputs)}; the gateway feeds exactly one image input"
        )
    ((input_name, tensor),) = signature.inputs.items()
    dims = [dim.size for dim in tensor.tensor_shape.dim]
    dtype = types_pb2.DataType.Name(tensor.dtype).removeprefix("DT_").lower()
    if (
        tensor.dtype != types_pb2.DT_UINT8
        or tensor.tensor_shape.unknown_rank
        or len(dims) != 4
        or dims[0] not in (-1, 0)
        or dims[1] <= 0
        or dims[2] <= 0
        or dims[3] != 3
    ):
        shape = "unknown rank" if tensor.tensor_shape.unknown_rank else str(dims)
        raise ModelIncompatible(
            f"model {model!r}: input {input_name!r} of {signature_name!r} is {dtype} {shape}; "
            "the gateway feeds uint8 [-1, H, W, 3] images"
        )
    return input_name, dims[1], dims[2]


def scores_output(model: str, signature: Any, wanted: str | None, num_labels: int) -> str:
    """The name of the float [-1, K] scores output (the named one, else the only such output)."""
    candidates = [wanted] if wanted else list(signature.outputs)
    found = []
    for name in candidates:
        if name not in signature.outputs:
            continue
        tensor = signature.outputs[name]
        dims = [dim.size for dim in tensor.tensor_shape.dim]
        if tensor.dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE) and len(dims) == 2:
            if dims[1] not in (-1, num_labels):
                raise ModelIncompatible(
                    f"model {model!r}: output {name!r} has {dims[1]} scores per image but "
                    f"there are {num_labels} labels"
                )
            found.append(name)
    if len(found) != 1:
        raise ModelIncompatible(
            f"model {model!r}: cannot find one float [-1, {num_labels}] scores output "
            f"(outputs: {sorted(signature.outputs)})"
        )
    return found[0]


def info_from_description(
    model: str, version: int, serving: Any, description: dict[str, Any]
) -> ModelInfo:
    """Build the ModelInfo from the contract's description, checked against the signature."""
    input_name, height, width = image_input(model, SERVING_SIGNATURE, serving)
    try:
        labels = contract.labels(description)
        resize = contract.resize_spec(description, height, width)
    except ContractError as exc:
        raise ModelIncompatible(f"model {model!r}: {exc}") from None
    wanted_input = contract.field(description, "input", "name") or input_name
    if wanted_input != input_name:
        raise ModelIncompatible(
            f"model {model!r}: the description names input {wanted_input!r} but "
            f"{SERVING_SIGNATURE!r} takes {input_name!r}"
        )
    wanted_scores = contract.field(description, "outputs", "scores") or SCORES_OUTPUT
    scores = scores_output(model, serving, wanted_scores, len(labels))
    return ModelInfo(
        name=model,
        version=version,
        labels=labels,
        resize=resize,
        input_name=input_name,
        scores_output=scores,
    )
