"""The REST API (TF Serving's `/v1/models/...`) as a Flask app, served by a threaded server.

Paths are matched with TF Serving's own regular expressions (`http_rest_api_util.cc`),
case-insensitively; anything under /v1/ they do not match is `Malformed request` (400),
anything else 404 with an empty body, as TF Serving's dispatcher does.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

import tensorflow as tf
from flask import Flask, Response, request
from gateway.contract import SERVING_SIGNATURE
from google.protobuf import json_format
from google.protobuf.message import Message
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)
from werkzeug.serving import BaseWSGIServer, make_server

from devserver import json_tensor
from devserver.errors import InvalidArgument, ServingError, Unimplemented
from devserver.manager import ServableManager
from devserver.metadata import SIGNATURE_DEF_FIELD, get_model_metadata, get_model_status
from devserver.predict import Predictor

log = logging.getLogger("devserver.requests")

_VERSION = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
PREDICT_PATH = re.compile(rf"/v1/models/([^/:]+){_VERSION}:(classify|regress|predict)", re.I)
STATUS_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION}(?:/(metadata))?", re.I)
V1_PATH = re.compile(r"/v1/.*", re.I)
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
JSON_TYPE = "application/json"


def _to_json(message: Message) -> dict[str, Any]:
    as_dict: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return as_dict


def model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    """The ModelSpec a REST path names (FillModelSpecWithNameVersionAndLabel)."""
    spec = model_pb2.ModelSpec(name=name)
    if version:
        try:
            spec.version.value = int(version)
        except ValueError:
            raise InvalidArgument(f"Failed to convert version: {version} to numeric.") from None
    if label:
        spec.version_label = label
    return spec


class RestApi:
    """The REST handlers, over the same manager and predictor as the gRPC API."""

    def __init__(self, manager: ServableManager, predictor: Predictor) -> None:
        self._manager = manager
        self._predictor = predictor

    def dispatch(self, method: str, path: str, body: bytes) -> str:
        """Route one /v1/ request; return the JSON body or raise a ServingError."""
        if method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
            name, version, label, verb = match.groups()
            if verb.lower() != "predict":
                raise Unimplemented(f"devserver does not implement the {verb} API")
            return self.predict(model_spec(name, version, label), body)
        if method == "GET" and (match := STATUS_PATH.fullmatch(path)):
            name, version, label, subresource = match.groups()
            if not name:
                raise InvalidArgument("Missing model name in request.")
            spec = model_spec(name, version, label)
            if subresource:
                return self.metadata(spec)
            return self.status(spec)
        raise InvalidArgument(f"Malformed request: {method} {path}")

    def status(self, spec: model_pb2.ModelSpec) -> str:
        """GET /v1/models/<name>[/versions/<v>]: the version status list."""
        response = get_model_status(
            self._manager, get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        )
        return str(
            json_format.MessageToJson(
                response,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        )

    def metadata(self, spec: model_pb2.ModelSpec) -> str:
        """GET /v1/models/<name>[/versions/<v>]/metadata: the SignatureDefMap as JSON."""
        response = get_model_metadata(
            self._manager,
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec, metadata_field=[SIGNATURE_DEF_FIELD]
            ),
        )
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        body = {
            "model_spec": _to_json(response.model_spec),
            "metadata": {SIGNATURE_DEF_FIELD: _to_json(signature_map)},
        }
        return json.dumps(body, indent=1)

    def predict(self, spec: model_pb2.ModelSpec, body: bytes) -> str:
        """POST /v1/models/<name>[/versions/<v>]:predict, row or columnar format."""
        document = json_tensor.parse_body(body)
        requested_signature = json_tensor.signature_name(document)
        servable = self._manager.resolve(spec)
        name = requested_signature or SERVING_SIGNATURE
        signature = servable.signature_defs.get(name)
        if signature is None:
            raise InvalidArgument(f'Serving signature name: "{name}" not found in signature def')
        if not signature.inputs:
            raise InvalidArgument(f"Failed to get input map for signature: {name}")
        arrays, request_format = json_tensor.request_arrays(document, signature.inputs)

        predict_request = predict_pb2.PredictRequest(model_spec=spec)
        predict_request.model_spec.signature_name = requested_signature
        for alias, array in arrays.items():
            predict_request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
        try:
            response = self._predictor.predict_on(servable, predict_request)
        except ServingError as err:
            self._predictor.requests.record(servable.name, err.code.name)
            raise
        self._predictor.requests.record(servable.name, "OK")
        outputs = {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
        return json_tensor.response_json(outputs, request_format)


def create_app(
    manager: ServableManager, predictor: Predictor, monitoring_path: str | None = None
) -> Flask:
    """The Flask app serving TF Serving's REST API (and Prometheus metrics if configured)."""
    app = Flask("devserver")
    api = RestApi(manager, predictor)

    @app.route("/", defaults={"path": ""}, methods=METHODS)
    @app.route("/<path:path>", methods=METHODS)
    def handle(path: str) -> Response:
        rid = request.headers.get("X-Request-Id", "-")
        if monitoring_path is not None and request.path == monitoring_path:
            return Response(predictor.requests.exposition(), 200, mimetype="text/plain")
        if not V1_PATH.fullmatch(request.path):
            log.info("rest %s %s -> 404 x-request-id=%s", request.method, request.path, rid)
            return Response(b"", status=404)
        try:
            body = api.dispatch(request.method, request.path, request.get_data())
        except ServingError as err:
            log.info(
                "rest %s %s -> %d: %s x-request-id=%s",
                request.method, request.path, err.http_status, err.message, rid,
            )  # fmt: skip
            return Response(json.dumps(err.to_json()), err.http_status, mimetype=JSON_TYPE)
        log.info("rest %s %s -> 200 x-request-id=%s", request.method, request.path, rid)
        return Response(body, 200, mimetype=JSON_TYPE)

    return app


class RestServer:
    """A threaded HTTP server for the app, run in a background thread."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="devserver-rest", daemon=True
        )

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting requests and wait for the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
