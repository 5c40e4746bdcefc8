"""Loading, warm-up replay, version polling, startup failures and the real process."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
import requests
from devserver.manager import StartupError
from devserver.server import ModelServer
from devserver.settings import BatchingParameters, ModelConfig, Settings, VersionPolicy
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from clothing_tools.local_stack import free_port
from tests.devserver import tiny_model
from tests.devserver.support import MODEL_NAME, warmup_requests

REPO_ROOT = Path(__file__).resolve().parents[2]
SAFETY_SECONDS = 300  # bounds for waiting on real processes, never asserted as speed


def portless(base: Path, **changes: Any) -> Settings:
    return Settings(
        models=(ModelConfig(MODEL_NAME, base),), grpc_port=0, rest_api_port=0, **changes
    )


def test_warmup_records_are_replayed_before_serving(model_base: Path) -> None:
    server = ModelServer(portless(model_base))
    server.start()
    try:
        servable = server.manager.specific(MODEL_NAME, 2)
        assert servable.warmup_records == len(warmup_requests())
        assert servable.calls == len(warmup_requests())
    finally:
        server.stop(0)


def test_warmup_can_be_switched_off(model_base: Path) -> None:
    server = ModelServer(portless(model_base, enable_model_warmup=False))
    server.start()
    try:
        assert server.manager.specific(MODEL_NAME, 2).calls == 0
    finally:
        server.stop(0)


def test_failing_warmup_record_fails_the_load(model_base: Path, tmp_path: Path) -> None:
    base = tmp_path / MODEL_NAME
    shutil.copytree(model_base / "1", base / "1")
    bad = tiny_model.predict_request(tiny_model.random_images(1, seed=300))
    bad.inputs["pictures"].CopyFrom(bad.inputs.pop("images"))
    tiny_model.write_warmup(base / "1", [warmup_requests()[0], bad])
    server = ModelServer(portless(base))
    with pytest.raises(
        StartupError, match=r"Warm-up record 2 of .* failed: Signature input alias: images"
    ):
        server.start()
    server.stop(0)
    states = server.manager.version_states(MODEL_NAME)
    assert states[1].state == "END" and states[1].error_code == "UNKNOWN"


def test_batching_refuses_warmup_fetching_unbatched_outputs(model_base: Path) -> None:
    # Like TF Serving, warm-up runs through the batching layer; record 1 fetches `labels` [K].
    settings = portless(
        model_base,
        enable_batching=True,
        batching=BatchingParameters(max_batch_size=8, num_batch_threads=1),
    )
    server = ModelServer(settings)
    with pytest.raises(StartupError, match=r"Warm-up record 1 .* Batched output tensor's 0th"):
        server.start()
    server.stop(0)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "Could not find base path"),
        ("empty", "No versions of servable tiny found under base path"),
        ("not-a-model", "SavedModel not found in export directory"),
    ],
)
def test_startup_fails_without_a_loadable_version(
    tmp_path: Path, layout: str, message: str
) -> None:
    base = tmp_path / MODEL_NAME
    if layout != "missing":
        base.mkdir()
        (base / "not-a-version").mkdir()
    if layout == "not-a-model":
        (base / "4").mkdir()
    server = ModelServer(portless(base))
    with pytest.raises(StartupError, match=message):
        server.start()
    server.stop(0)


def test_new_version_is_picked_up_by_polling(model_base: Path, tmp_path: Path) -> None:
    base = tmp_path / MODEL_NAME
    shutil.copytree(model_base / "1", base / "1")
    server = ModelServer(portless(base, file_system_poll_wait_seconds=1))
    server.start()
    try:
        assert [s.version for s in server.manager.available()] == [1]
        # Copy under a non-numeric name, then rename: the poller never sees half a version.
        shutil.copytree(model_base / "2", base / "incoming")
        (base / "incoming").rename(base / "2")
        deadline = time.monotonic() + SAFETY_SECONDS
        while time.monotonic() < deadline:
            states = server.manager.version_states(MODEL_NAME)
            if states.get(1) and states[1].state == "END":
                break
            time.sleep(0.2)
        states = server.manager.version_states(MODEL_NAME)
        assert states[2].state == "AVAILABLE"
        assert states[1].state == "END"
        assert [s.version for s in server.manager.available()] == [2]
    finally:
        server.stop(0)


def _read_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def test_process_serves_latest_version_and_dies_at_once_on_sigterm_like_tf_serving(
    model_base: Path,
) -> None:
    grpc_port, rest_port = free_port(), free_port()
    env = dict(os.environ)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devserver",
            "--port",
            str(grpc_port),
            "--rest_api_port",
            str(rest_port),
            "--model_name",
            MODEL_NAME,
            "--model_base_path",
            str(model_base),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    reader = threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + SAFETY_SECONDS
        while not any("AVAILABLE:" in line for line in seen):
            assert process.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        ready = next(line for line in seen if "AVAILABLE:" in line)
        assert f"{MODEL_NAME} version 2" in ready and f"{MODEL_NAME} version 1" not in ready
        assert f"gRPC 127.0.0.1:{grpc_port}" in ready and f"REST 127.0.0.1:{rest_port}" in ready

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            # The default policy serves only the latest version, as TF Serving does.
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = MODEL_NAME
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                status_request, timeout=30
            )
            assert [s.version for s in status.model_version_status] == [2]
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = tiny_model.predict_request(tiny_model.random_images(1, seed=400))
            response = stub.Predict(request, timeout=30, metadata=[("x-request-id", "proc-7")])
            assert response.model_spec.version.value == 2
            request.model_spec.version.value = 1
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        rest = requests.get(f"http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}", timeout=30)
        assert rest.json()["model_version_status"][0]["state"] == "AVAILABLE"

        # like tensorflow_model_server (no handler): SIGTERM's default action ends it at once
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=SAFETY_SECONDS) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    process.stderr.close()
    while not lines.empty():
        seen.append(lines.get())
    log = "".join(seen)
    assert "x-request-id=proc-7" in log
    assert "Server stopped" not in log and "Traceback" not in log


def test_labels_at_startup_need_the_allowing_flag_as_in_tf_serving(model_base: Path) -> None:
    # TF Serving assigns labels before loading the first config, so without
    # --allow_version_labels_for_unavailable_models any start-up label fails (server_core.cc)
    labelled = ModelConfig(MODEL_NAME, model_base, VersionPolicy("all"), {"stable": 1})
    server = ModelServer(Settings(models=(labelled,), grpc_port=free_port(), rest_api_port=0))
    with pytest.raises(
        StartupError,
        match=r"^FAILED_PRECONDITION: Request to assign label to version 1 of model tiny, "
        r"which is not currently available for inference$",
    ):
        server.start()
    server.stop(0)


def test_a_label_may_name_an_unloaded_version_with_the_flag_and_then_finds_nothing(
    model_base: Path,
) -> None:
    labelled = ModelConfig(
        MODEL_NAME, model_base, VersionPolicy("specific", versions=(1,)), {"canary": 2}
    )
    settings = Settings(
        models=(labelled,),
        grpc_port=free_port(),
        rest_api_port=0,
        allow_version_labels_for_unavailable_models=True,
    )
    server = ModelServer(settings)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = tiny_model.predict_request(tiny_model.random_images(1, seed=7))
            request.model_spec.version_label = "canary"
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == (
            f"Servable not found for request: Specific({MODEL_NAME}, 2)"
        )
    finally:
        server.stop(grace_seconds=1)
