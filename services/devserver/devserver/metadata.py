"""GetModelMetadata and GetModelStatus, as `get_model_metadata_impl.cc` and
`get_model_status_impl.cc` answer them."""

from __future__ import annotations

from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from devserver.errors import InvalidArgument, NotFound
from devserver.manager import ServableManager

SIGNATURE_DEF_FIELD = "signature_def"


def get_model_metadata(
    manager: ServableManager, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """The servable's SignatureDefMap, packed in an Any under `signature_def`."""
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    if not request.metadata_field:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
    for metadata_field in request.metadata_field:
        if metadata_field != SIGNATURE_DEF_FIELD:
            raise InvalidArgument(f"Metadata field {metadata_field} is not supported")
    servable = manager.resolve(request.model_spec)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def get_model_status(
    manager: ServableManager, request: get_model_status_pb2.GetModelStatusRequest
) -> get_model_status_pb2.GetModelStatusResponse:
    """The state of every version of a model, or of the one version asked for."""
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    spec = request.model_spec
    states = manager.version_states(spec.name)
    choice = spec.WhichOneof("version_choice")
    if choice is not None:
        if choice == "version":
            version = spec.version.value
        else:
            version = manager.version_for_label(spec.name, spec.version_label)
        if version not in states:
            raise NotFound(f"Could not find version {version} of model {spec.name}")
        states = {version: states[version]}
    elif not states:
        raise NotFound(f"Could not find any versions of model {spec.name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state in states.items():
        entry = response.model_version_status.add()
        entry.version = version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
        entry.status.error_code = state_error_code(state.error_code)
        entry.status.error_message = state.error_message
    return response


def state_error_code(name: str) -> int:
    """The tensorflow.error.Code number for a code name such as OK or UNKNOWN."""
    return int(error_codes_pb2.Code.Value(name))
