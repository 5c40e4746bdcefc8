"""The gateway runs from its requirements alone (no TensorFlow) and shuts down gracefully."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from clothing_tools.local_stack import Running, free_port, start_gateway
from tests.gateway.support import Route, serve_images
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow
REQUIREMENTS = REPO_ROOT / "services" / "gateway" / "requirements.txt"


def uv() -> str:
    found = shutil.which("uv") or str(REPO_ROOT / ".tools" / "uv" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv not found (make installs it into .tools/uv)")
    return found


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment built from services/gateway/requirements.txt alone."""
    venv = tmp_path_factory.mktemp("gateway-venv") / "venv"
    subprocess.run([uv(), "venv", "--quiet", "--python", "3.11", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [uv(), "pip", "install", "--quiet", "--python", str(python), "-r", str(REQUIREMENTS)],
        check=True,
    )
    return python


def test_requirements_install_no_tensorflow(fresh_python: Path) -> None:
    listed = subprocess.run(
        [uv(), "pip", "list", "--python", str(fresh_python), "--format", "freeze"],
        check=True, capture_output=True, text=True,
    ).stdout.lower()  # fmt: skip
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert "tensorflow-protobuf" in names
    assert not names & {
        "tensorflow",
        "tensorflow-cpu",
        "keras",
        "tf-keras",
        "tensorflow-serving-api",
    }
    code = (
        "import tensorflow, importlib.util; "
        "print(hasattr(tensorflow, '__version__'), importlib.util.find_spec('tensorflow.python'))"
    )
    probe = subprocess.run(
        [str(fresh_python), "-c", code], check=True, capture_output=True, text=True
    )
    assert probe.stdout.split() == ["False", "None"]


@pytest.fixture(scope="module")
def fresh_gateway(fresh_python: Path, model_server: Running, logs: Path) -> Iterator[Running]:
    with start_gateway(
        tf_serving_host=model_server.grpc_target, port=free_port(), python=fresh_python,
        env={"GATEWAY_ALLOW_PRIVATE_URLS": "true", "GATEWAY_WORKERS": "1",
             "GATEWAY_GRACEFUL_TIMEOUT_SECONDS": "20"},
        log=logs / "fresh-gateway.log",
    ) as running:  # fmt: skip
        yield running


def test_gateway_from_its_requirements_classifies(
    fresh_gateway: Running, photos: list[Path], reference: dict[Path, str]
) -> None:
    photo = photos[0]
    response = requests.post(
        f"{fresh_gateway.url}/predict", files={"file": (photo.name, photo.read_bytes())},
        timeout=60,
    )  # fmt: skip
    assert response.status_code == 200
    assert response.json()["top"] == reference[photo]


def test_sigterm_lets_requests_in_flight_finish(fresh_gateway: Running, photos: list[Path]) -> None:
    slow = Route(photos[0].read_bytes(), delay=2.0)
    with serve_images({"/slow.jpg": slow}) as host:
        answers: list[requests.Response] = []
        request = threading.Thread(
            target=lambda: answers.append(
                requests.post(
                    f"{fresh_gateway.url}/predict", json={"url": host.url("/slow.jpg")},
                    timeout=60,
                )
            )
        )  # fmt: skip
        request.start()
        while host.hits.get("/slow.jpg", 0) == 0 and request.is_alive():
            threading.Event().wait(0.05)  # the download has started
        fresh_gateway.process.send_signal(signal.SIGTERM)
        request.join(60)
    assert answers and answers[0].status_code == 200
    assert fresh_gateway.process.wait(60) == 0
