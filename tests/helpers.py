"""Paths and small helpers shared by the test packages (imported; conftest files hold fixtures)."""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path

from flask import Flask
from werkzeug.serving import make_server

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET_DIR = REPO_ROOT.parent / "shared" / "clothing-dataset-small"
DEMO_MODEL_BASE = REPO_ROOT / "services" / "model" / "clothing-model"
GATEWAY_PYTHON = REPO_ROOT / ".venv-gateway" / "bin" / "python"


def serve_wsgi(app: Flask) -> Generator[str, None, None]:
    """Serve a Flask app from a real threaded HTTP server on loopback; yield its base URL once.

    A generator, for `yield from` in fixtures; closing it stops the server.
    """
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def first_photos_per_class(dataset_dir: Path, per_class: int) -> list[Path]:
    """The first `per_class` validation photos of every class, classes in name order."""
    chosen: list[Path] = []
    for class_dir in sorted((dataset_dir / "validation").iterdir()):
        chosen += sorted(class_dir.glob("*.jpg"))[:per_class]
    return chosen
