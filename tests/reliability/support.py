"""Settings, the gunicorn launcher and the figures file shared by the reliability tests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clothing_tools.local_stack import Running, free_port, start_gateway
from tests.helpers import GATEWAY_PYTHON, REPO_ROOT

FIGURES = REPO_ROOT / "build" / "reliability"
MAX_IMAGE_BYTES = 2 * 1024 * 1024
# Short deadlines keep the slow-host cases quick; the limits are the gateway's own settings.
GATEWAY_ENV = {
    "GATEWAY_WORKERS": "2",
    "GATEWAY_THREADS": "4",
    "GATEWAY_DOWNLOAD_TIMEOUT_SECONDS": "3",
    "GATEWAY_READ_TIMEOUT_SECONDS": "2",
    "GATEWAY_CONNECT_TIMEOUT_SECONDS": "1",
    "GATEWAY_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
    "GATEWAY_MAX_BODY_BYTES": str(MAX_IMAGE_BYTES + 512 * 1024),
    "GATEWAY_LOG_LEVEL": "WARNING",
}
DOWNLOAD_DEADLINE = 3.0
# Bounded-time safety margin on a shared 2-core machine (not a speed claim).
SLACK = 6.0


def gunicorn(model_server: Running, logs: Path, name: str, **env: str) -> Iterator[Running]:
    """A gunicorn gateway from .venv-gateway on a free loopback port."""
    if not GATEWAY_PYTHON.exists():
        pytest.fail(f"{GATEWAY_PYTHON} is missing: run `make gateway-env`")
    with start_gateway(
        tf_serving_host=model_server.grpc_target, port=free_port(), env={**GATEWAY_ENV, **env},
        log=logs / f"{name}.log",
    ) as running:  # fmt: skip
        yield running


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Write one JSON file of measured figures under build/reliability/ (atomically)."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    target = FIGURES / f"{name}.json"
    partial = target.with_suffix(".json.part")
    partial.write_text(json.dumps(figures, indent=2, sort_keys=True))
    os.replace(partial, target)
