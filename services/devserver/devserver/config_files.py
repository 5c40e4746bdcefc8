"""Parsing of TF Serving's text-proto files: `--batching_parameters_file`, `--model_config_file`.

Both go through protobuf's own text-format parser. `ModelServerConfig` ships with
tensorflow-serving-api; `BatchingParameters` does not (it lives in TF Serving's
session_bundle_config.proto), so the supported fields are declared here with the same
names, numbers and wrapper types, and anything else is rejected by the parser by name.
"""

from __future__ import annotations

import itertools
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from devserver.settings import BatchingParameters, ModelConfig, VersionPolicy


class ConfigError(ValueError):
    """A configuration file or flag value that the server cannot use."""


# (name, field number, wrapper type) exactly as in session_bundle_config.proto
_BATCHING_FIELDS = (
    ("max_batch_size", 1, "Int64Value"),
    ("batch_timeout_micros", 2, "Int64Value"),
    ("max_enqueued_batches", 3, "Int64Value"),
    ("num_batch_threads", 4, "Int64Value"),
    ("thread_pool_name", 5, "StringValue"),
)


@cache
def _batching_parameters_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="devserver/batching_parameters.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    field_type = descriptor_pb2.FieldDescriptorProto
    for name, number, wrapper in _BATCHING_FIELDS:
        message.field.add(
            name=name,
            number=number,
            type=field_type.TYPE_MESSAGE,
            type_name=f".google.protobuf.{wrapper}",
            label=field_type.LABEL_OPTIONAL,
        )
    message.field.add(
        name="allowed_batch_sizes",
        number=6,
        type=field_type.TYPE_INT64,
        label=field_type.LABEL_REPEATED,
    )
    # Accepted so real configs parse; only the default (false) is supported.
    message.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=field_type.TYPE_BOOL,
        label=field_type.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    )


def parse_batching_parameters(text: str, source: str = "<text>") -> BatchingParameters:
    """A `BatchingParameters` text proto; unset fields keep TF Serving's defaults."""
    proto = _batching_parameters_class()()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ConfigError(f"invalid batching parameters file {source}: {err}") from None
    if proto.pad_variable_length_inputs:
        raise ConfigError(f"{source}: pad_variable_length_inputs: true is not supported")
    defaults = BatchingParameters()
    values: dict[str, Any] = {}
    for name, _, _ in _BATCHING_FIELDS:
        values[name] = (
            getattr(proto, name).value if proto.HasField(name) else getattr(defaults, name)
        )
    allowed = tuple(int(size) for size in proto.allowed_batch_sizes)
    params = BatchingParameters(allowed_batch_sizes=allowed, **values)
    _check_batching(params, source)
    return params


def _check_batching(params: BatchingParameters, source: str) -> None:
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if getattr(params, name) < 1:
            raise ConfigError(f"{source}: {name} must be at least 1, got {getattr(params, name)}")
    if params.batch_timeout_micros < 0:
        raise ConfigError(f"{source}: batch_timeout_micros must not be negative")
    allowed = params.allowed_batch_sizes
    if allowed:
        if any(b <= a for a, b in itertools.pairwise(allowed)) or allowed[0] < 1:
            raise ConfigError(f"{source}: allowed_batch_sizes entries must be increasing and > 0")
        # Same check and wording as TF Serving's CreateBatchScheduler.
        if allowed[-1] != params.max_batch_size:
            raise ConfigError(
                f"{source}: Last entry in allowed_batch_sizes must match max_batch_size; "
                f"last entry was {allowed[-1]}; expected {params.max_batch_size}"
            )


def read_batching_parameters(path: Path) -> BatchingParameters:
    """Read and parse `--batching_parameters_file`."""
    return parse_batching_parameters(_read(path, "batching parameters"), str(path))


def parse_model_config(text: str, source: str = "<text>") -> tuple[ModelConfig, ...]:
    """The models of a `ModelServerConfig` text proto (its `model_config_list`)."""
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ConfigError(f"invalid model config file {source}: {err}") from None
    if proto.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: only model_config_list is supported")
    models: list[ModelConfig] = []
    for entry in proto.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise ConfigError(f"{source}: every model needs a name and a base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{source}: model {entry.name}: only model_platform tensorflow")
        models.append(
            ModelConfig(
                name=entry.name,
                base_path=Path(entry.base_path),
                policy=_policy(entry.model_version_policy),
                version_labels=dict(entry.version_labels),
            )
        )
    names = [m.name for m in models]
    if not models or len(set(names)) != len(names):
        raise ConfigError(f"{source}: model names must be present and unique")
    return tuple(models)


def _policy(proto: Any) -> VersionPolicy:
    kind = proto.WhichOneof("policy_choice")
    if kind == "all":
        return VersionPolicy("all")
    if kind == "specific":
        return VersionPolicy("specific", versions=tuple(proto.specific.versions))
    if kind == "latest" and proto.latest.num_versions > 0:
        return VersionPolicy("latest", num_versions=proto.latest.num_versions)
    return VersionPolicy()


def read_model_config(path: Path) -> tuple[ModelConfig, ...]:
    """Read and parse `--model_config_file`."""
    return parse_model_config(_read(path, "model config"), str(path))


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {what} file {path}: {err.strerror}") from None


def read_monitoring_config(path: Path) -> str | None:
    """Read `--monitoring_config_file`; the Prometheus metrics path, or None when disabled."""
    from devserver.monitoring import parse_monitoring_config

    text = _read(path, "monitoring config")
    try:
        return parse_monitoring_config(text)
    except text_format.ParseError as err:
        raise ConfigError(f"{path}: {err}") from None
