"""The real stack on loopback: the model server, gunicorn + gateway from .venv-gateway, and a
loopback HTTP server holding the validation photos."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clothing_tools.local_stack import Running, free_port, start_gateway
from tests.e2e.support import KEY, SECOND_KEY
from tests.helpers import GATEWAY_PYTHON, first_photos_per_class

PHOTOS_PER_CLASS = 8


@pytest.fixture(scope="session")
def gateway(model_server: Running, logs: Path) -> Iterator[Running]:
    """gunicorn with two gthread workers, from .venv-gateway."""
    if not GATEWAY_PYTHON.exists():
        pytest.fail(f"{GATEWAY_PYTHON} is missing: run `make gateway-env`")
    env = {"GATEWAY_ALLOW_PRIVATE_URLS": "true", "GATEWAY_WORKERS": "2", "GATEWAY_THREADS": "4"}
    with start_gateway(
        tf_serving_host=model_server.grpc_target, port=free_port(), env=env,
        log=logs / "gateway.log",
    ) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api-keys") / "keys"
    path.write_text(f"# e2e keys\n{KEY}\n\n{SECOND_KEY}\n")
    return path


@pytest.fixture(scope="session")
def keyed_gateway(model_server: Running, logs: Path, keys_file: Path) -> Iterator[Running]:
    """gunicorn (two workers) requiring an API key, with metrics on a port of their own."""
    env = {"GATEWAY_ALLOW_PRIVATE_URLS": "true", "GATEWAY_WORKERS": "2", "GATEWAY_THREADS": "4",
           "GATEWAY_API_KEYS_FILE": str(keys_file)}  # fmt: skip
    with start_gateway(
        tf_serving_host=model_server.grpc_target, port=free_port(), env=env,
        log=logs / "keyed-gateway.log",
    ) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="session")
def photo_server(dataset_dir: Path) -> Iterator[str]:
    """The dataset served over HTTP on 127.0.0.1; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(dataset_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def photos(dataset_dir: Path) -> list[Path]:
    """A fixed sample of validation photos: the first few of every class."""
    return first_photos_per_class(dataset_dir, PHOTOS_PER_CLASS)


@pytest.fixture(scope="session")
def reference(model_base: Path, photos: list[Path]) -> dict[Path, str]:
    """The exported model's own top class per photo, computed in this process with TF."""
    import tensorflow as tf
    from gateway import contract
    from gateway.preprocessing import to_model_input

    version = contract.latest_version_dir(model_base)
    description = contract.read_description(version)
    spec = contract.resize_spec(description)
    serve = tf.saved_model.load(str(version)).signatures[contract.SERVING_SIGNATURE]
    batch = np.stack([to_model_input(p.read_bytes(), spec) for p in photos])
    scores = serve(images=tf.constant(batch))[contract.SCORES_OUTPUT].numpy()
    labels = contract.labels(description)
    return {p: labels[int(i)] for p, i in zip(photos, scores.argmax(axis=1), strict=True)}


@pytest.fixture(scope="session")
def gateway_url(gateway: Running) -> str:
    """The running gateway's base URL."""
    return gateway.url
