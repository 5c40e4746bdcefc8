"""Small real helpers for the gateway tests: image bytes, a loopback image host, a canary
listener, a colour-reading predictor and the OpenAPI response check."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
from gateway.contract import ResizeSpec
from gateway.errors import GatewayError
from gateway.metrics import Metrics, serve_metrics
from gateway.predictor import ModelInfo, Prediction
from PIL import Image

MAX_IMAGE_BYTES = 200_000  # the gateway tests' image limit (small, to test it cheaply)

OPENAPI = json.loads(
    (Path(__file__).resolve().parents[2] / "services/gateway/gateway/openapi.json").read_text()
)
COLOURS = {"red": (220, 20, 30), "green": (20, 200, 40), "blue": (30, 40, 210)}


def image_bytes(
    fmt: str = "JPEG",
    colour: tuple[int, int, int] = COLOURS["red"],
    size: tuple[int, int] = (64, 48),
    mode: str = "RGB",
) -> bytes:
    """A solid-colour image encoded in the given format."""
    image = Image.new("RGB", size, colour)
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


class ColourPredictor:
    """A real predictor for tests where the model is not the point: softmax of mean colour."""

    def __init__(self, size: int = 32) -> None:
        self.info = ModelInfo(
            name="colour-model",
            version=3,
            labels=("red", "green", "blue"),
            resize=ResizeSpec(size, size, "bilinear"),
        )
        self.batches: list[int] = []

    def model_info(
        self, request_id: str, *, allow_stale: bool = False, route: str = "stable"
    ) -> ModelInfo:
        return self.info

    def invalidate(self, route: str | None = None) -> None:
        pass

    def predict(
        self, images: np.ndarray, request_id: str, *, info: ModelInfo | None = None
    ) -> Prediction:
        assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3)
        self.batches.append(len(images))
        means = images.reshape(len(images), -1, 3).mean(axis=1) / 20.0
        exp = np.exp(means - means.max(axis=1, keepdims=True))
        return Prediction(self.info, exp / exp.sum(axis=1, keepdims=True))


class ScriptedPredictor(ColourPredictor):
    """ColourPredictor that raises a given error for requests whose id starts with `fail-`."""

    def __init__(self, failures: dict[str, GatewayError]) -> None:
        super().__init__()
        self.failures = failures

    def predict(
        self, images: np.ndarray, request_id: str, *, info: ModelInfo | None = None
    ) -> Prediction:
        if request_id in self.failures:
            raise self.failures[request_id]
        return super().predict(images, request_id, info=info)


@dataclass
class Route:
    """What the image host answers on one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    delay: float = 0.0


@dataclass
class ImageHost:
    """A loopback HTTP server answering from a route table; counts requests per path."""

    routes: dict[str, Route] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    base_url: str = ""
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return self.base_url + path


@contextmanager
def serve_images(routes: dict[str, Route]) -> Iterator[ImageHost]:
    """Run an ImageHost on 127.0.0.1 for the duration of the block."""
    host = ImageHost(routes=dict(routes))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host.hits[self.path] = host.hits.get(self.path, 0) + 1
            route = host.routes.get(self.path)
            if route is None:
                route = Route(b"no such image", 404, "text/plain")
            if route.delay:
                host.stop.wait(route.delay)
            try:
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
            except OSError:
                pass  # the gateway gave up first (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        host.stop.set()
        server.shutdown()
        server.server_close()


class Canary:
    """A loopback listener (IPv4 or IPv6) that only counts the connections it receives."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Start every call at the same moment in its own thread and return their results."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def response_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    """The JSON schema the OpenAPI document gives for a response (None for non-JSON)."""
    responses = OPENAPI["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} {status} is not documented"
    response = responses[str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response["content"]
    if "application/json" not in content:
        return None
    # make "#/components/..." references resolve against the document
    return {**content["application/json"]["schema"], "components": OPENAPI["components"]}


def assert_documented(path: str, method: str, status: int, content_type: str, body: Any) -> None:
    """Fail unless the response matches what the OpenAPI document says for it."""
    schema = response_schema(path, method, status)
    if schema is None:
        documented = OPENAPI["paths"][path][method.lower()]["responses"][str(status)]["content"]
        assert content_type.split(";")[0] in documented
        return
    assert content_type.split(";")[0] == "application/json"
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until the predicate holds (a bounded wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def serve_metrics_url(metrics: Metrics) -> Iterator[str]:
    """Serve `metrics` on a listener of their own, as the gunicorn master does."""
    server = serve_metrics("127.0.0.1:0", metrics.registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
