"""One loaded model version: its SignatureDefs as written on disk and callable signatures."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from devserver.errors import ServingError

SERVE_TAG = "serve"


class LoadError(RuntimeError):
    """A model version that could not be loaded."""


class TensorFlowError(ServingError):
    """An error raised while running the graph, with TensorFlow's own status code."""

    def __init__(self, err: tf.errors.OpError) -> None:
        super().__init__(err.message)
        self.code = _GRPC_CODES.get(err.error_code, grpc.StatusCode.UNKNOWN)
        self.http_status = _HTTP_STATUS.get(self.code, 500)


_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAVAILABLE: 503,
}


class Servable:
    """A SavedModel version loaded with `tf.saved_model.load`, counting its graph runs."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
        functions: Mapping[str, Any],
        keepalive: object = None,
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.signature_defs = dict(signature_defs)
        self._functions = dict(functions)
        self._keepalive = keepalive
        self._lock = threading.Lock()
        self._calls = 0
        self.warmup_records = 0

    def __repr__(self) -> str:
        return f"{{name: {self.name} version: {self.version}}}"

    @property
    def calls(self) -> int:
        """How many times a signature of this version has actually been run."""
        with self._lock:
            return self._calls

    def has_function(self, signature_name: str) -> bool:
        """Whether the signature can be run (the init-op entry, for one, cannot)."""
        return signature_name in self._functions

    def run(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_aliases: list[str]
    ) -> dict[str, np.ndarray]:
        """Run one signature once on already validated inputs; return the chosen outputs."""
        function = self._functions[signature_name]
        with self._lock:
            self._calls += 1
        try:
            result = function(**{alias: tf.constant(value) for alias, value in inputs.items()})
        except tf.errors.OpError as err:
            raise TensorFlowError(err) from None
        return {alias: _to_numpy(result[alias]) for alias in output_aliases}


def _to_numpy(tensor: tf.Tensor) -> np.ndarray:
    # String tensors come back as bytes (scalars) or `S` arrays; keep them as object arrays.
    value = tensor.numpy()
    if tensor.dtype == tf.string:
        return np.array(value, dtype=object)
    return np.asarray(value)


def read_meta_graph(path: Path, tag: str = SERVE_TAG) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged `serve` from saved_model.pb (or .pbtxt) under `path`."""
    saved_model = saved_model_pb2.SavedModel()
    binary, text = path / "saved_model.pb", path / "saved_model.pbtxt"
    try:
        if binary.is_file():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(encoding="utf-8"), saved_model)
        else:
            raise LoadError(f"SavedModel not found in export directory: {path}")
    except (OSError, ValueError) as err:
        raise LoadError(f"cannot read SavedModel in {path}: {err}") from None
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    raise LoadError(
        f"Could not find meta graph def matching supplied tags: {{ {tag} }}. To inspect "
        "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`"
    )


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Load one version directory; raise LoadError with TF Serving's wording on failure."""
    meta_graph = read_meta_graph(path)
    try:
        loaded = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    except Exception as err:
        raise LoadError(
            f"Loading servable: {{name: {name} version: {version}}} failed: {err}"
        ) from err
    functions = dict(getattr(loaded, "signatures", {}))
    return Servable(name, version, path, meta_graph.signature_def, functions, keepalive=loaded)
