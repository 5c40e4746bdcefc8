"""`make local`'s program: refuses bad input in one line, runs the stack, stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from clothing_tools.local_stack import free_port
from tests.helpers import DEMO_MODEL_BASE, GATEWAY_PYTHON, REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "local_stack.py"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env={**os.environ, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_bad_port_is_one_line_and_exit_code_2() -> None:
    result = run(GATEWAY_PORT="http")
    assert result.returncode == 2
    assert result.stderr.strip() == "local_stack: GATEWAY_PORT='http' is not a port number"


def test_missing_model_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = run("--model-base-path", str(tmp_path), MODEL_GRPC_PORT=str(free_port()))
    assert result.returncode == 2
    assert result.stderr.strip() == f"local_stack: no model version folder under {tmp_path}"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_runs_the_stack_and_stops_both_on_ctrl_c(tmp_path: Path) -> None:
    if not GATEWAY_PYTHON.exists():
        pytest.fail(f"{GATEWAY_PYTHON} is missing: run `make gateway-env`")
    model = DEMO_MODEL_BASE
    ports = {"GATEWAY_PORT": free_port(), "GATEWAY_METRICS_PORT": free_port(),
             "MODEL_GRPC_PORT": free_port(), "MODEL_REST_PORT": free_port()}  # fmt: skip
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    env.pop("GATEWAY_ALLOW_PRIVATE_URLS", None)
    output = (tmp_path / "out.txt").open("w+")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--model-base-path", str(model), "--workers", "1"],
        env=env, stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "local_stack: ready." not in (tmp_path / "out.txt").read_text():
            assert process.poll() is None, (tmp_path / "out.txt").read_text()
            assert time.monotonic() < deadline, "the stack did not become ready"
            time.sleep(0.5)
        gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        assert requests.get(f"{gateway}/readyz", timeout=10).status_code == 200
        assert f"curl -s -X POST {gateway}/predict" in (tmp_path / "out.txt").read_text()
        # metrics on their own port, announced; the gateway's port does not serve them
        metrics = f"http://127.0.0.1:{ports['GATEWAY_METRICS_PORT']}/metrics"
        assert metrics in (tmp_path / "out.txt").read_text()
        assert "gateway_requests_total" in requests.get(metrics, timeout=10).text
        assert requests.get(f"{gateway}/metrics", timeout=10).status_code == 404
        # private URLs are allowed locally: the model server's own REST port is reachable
        answer = requests.post(
            f"{gateway}/predict", json={"url": f"http://127.0.0.1:{ports['MODEL_REST_PORT']}/"},
            timeout=30,
        )  # fmt: skip
        assert answer.json()["error"]["code"] != "forbidden_url"
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        output.close()
    assert "local_stack: stopped" in (tmp_path / "out.txt").read_text()
    assert not any(_listening(port) for port in ports.values())


def test_canary_not_above_stable_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "stable" / "3").mkdir(parents=True)
    (tmp_path / "canary" / "2").mkdir(parents=True)
    result = run(
        "--model-base-path", str(tmp_path / "stable"),
        "--canary-model-path", str(tmp_path / "canary"),
        GATEWAY_PORT=str(free_port()),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"local_stack: the canary's version (2, {tmp_path / 'canary'}) must be above the "
        f"stable version (3, {tmp_path / 'stable'}): TF Serving tells versions apart by number"
    )


def test_canary_percent_out_of_range_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = run("--canary-model-path", str(tmp_path), "--canary-percent", "150")
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "local_stack: --canary-percent must be between 0 and 100, got 150"
    )


def test_stable_and_canary_layout_and_config(tmp_path: Path) -> None:
    from clothing_tools.local_stack import stable_and_canary

    for base, version in (("stable", 2), ("stable", 1), ("canary", 3)):
        (tmp_path / base / str(version)).mkdir(parents=True)
    config = stable_and_canary(
        tmp_path / "stable", tmp_path / "canary", tmp_path / "work", "clothing-model"
    )
    served = tmp_path / "work" / "clothing-model"
    assert sorted(p.name for p in served.iterdir()) == ["2", "3"]
    assert (served / "3").resolve() == (tmp_path / "canary" / "3").resolve()
    from devserver.config_files import read_model_config

    (model,) = read_model_config(config)
    assert model.name == "clothing-model" and model.base_path == served.resolve()
    assert model.policy.versions == (2, 3)
    assert dict(model.version_labels) == {"stable": 2, "canary": 3}
