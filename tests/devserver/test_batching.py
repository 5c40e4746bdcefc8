"""Server-side batching, proven by counting real graph runs (never by timing)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from devserver.batching import BatchScheduler
from devserver.errors import InvalidArgument, Unavailable
from devserver.servable import Servable, load_servable
from devserver.server import ModelServer
from devserver.settings import BatchingParameters, ModelConfig, Settings
from tensorflow_serving.apis import prediction_service_pb2_grpc

from clothing_tools.local_stack import free_port
from tests.devserver import tiny_model
from tests.devserver.support import MODEL_NAME, PredictionStub, serve

MAX_BATCH = 8
# Long enough that a batch only ever closes because it is full: the assertions below
# count graph runs, and nothing depends on how fast the requests arrive.
NEVER_MICROS = 60_000_000


@pytest.fixture(scope="module")
def batching_server(model_base: Path) -> Iterator[ModelServer]:
    """The latest version behind --enable_batching (max 8 rows), no warm-up."""
    settings = Settings(
        models=(ModelConfig(MODEL_NAME, model_base),),
        grpc_port=free_port(),
        rest_api_port=0,
        enable_batching=True,
        batching=BatchingParameters(
            max_batch_size=MAX_BATCH, batch_timeout_micros=NEVER_MICROS, num_batch_threads=2
        ),
        enable_model_warmup=False,
    )
    yield from serve(settings)


@pytest.fixture(scope="module")
def stub(
    batching_server: ModelServer,
) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{batching_server.settings.grpc_port}") as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def scores_request(images: np.ndarray) -> Any:
    request = tiny_model.predict_request(images)
    request.output_filter.append("scores")
    return request


def test_concurrent_requests_are_merged_into_one_graph_run(
    batching_server: ModelServer, stub: PredictionStub
) -> None:
    servable = batching_server.manager.specific(MODEL_NAME, 2)
    before = servable.calls
    images = [tiny_model.random_images(1, seed=200 + i) for i in range(MAX_BATCH)]
    with ThreadPoolExecutor(MAX_BATCH) as pool:
        responses = list(pool.map(lambda im: stub.Predict(scores_request(im), timeout=120), images))
    assert servable.calls - before == 1
    for image, response in zip(images, responses, strict=True):
        assert response.model_spec.version.value == 2
        np.testing.assert_allclose(
            tf.make_ndarray(response.outputs["scores"]),
            tiny_model.expected_scores(image, 2),
            atol=1e-6,
        )


def test_requests_of_several_rows_share_a_batch(
    batching_server: ModelServer, stub: PredictionStub
) -> None:
    servable = batching_server.manager.specific(MODEL_NAME, 2)
    before = servable.calls
    images = [tiny_model.random_images(3, seed=210), tiny_model.random_images(5, seed=211)]
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda im: stub.Predict(scores_request(im), timeout=120), images))
    assert servable.calls - before == 1
    for image, response in zip(images, responses, strict=True):
        np.testing.assert_allclose(
            tf.make_ndarray(response.outputs["scores"]),
            tiny_model.expected_scores(image, 2),
            atol=1e-6,
        )


def test_unbatched_output_fails_like_tf_serving(stub: PredictionStub) -> None:
    # `labels` is [K], not [batch, ...]: TF Serving's BatchingSession cannot split it.
    request = tiny_model.predict_request(tiny_model.random_images(MAX_BATCH, seed=220))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=120)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (
        "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension "
        "sizes of the input tensors"
    )


def test_scalar_output_fails_like_tf_serving(stub: PredictionStub) -> None:
    request = tiny_model.predict_request(tiny_model.random_images(MAX_BATCH, seed=221), "describe")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=120)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "Batched output tensor has 0 dimensions"


def test_request_larger_than_max_batch_is_refused(stub: PredictionStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(scores_request(tiny_model.random_images(MAX_BATCH + 1, seed=222)), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        f"Task size {MAX_BATCH + 1} is larger than maximum input batch size {MAX_BATCH}"
    )


# -- the scheduler on its own, with a real servable ----------------------------------------


@pytest.fixture(scope="module")
def servable(model_base: Path) -> Servable:
    return load_servable(MODEL_NAME, 1, model_base / "1")


def test_batch_is_padded_to_an_allowed_size(servable: Servable) -> None:
    scheduler = BatchScheduler(
        BatchingParameters(max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1)
    )
    scheduler.start()
    try:
        images = tiny_model.random_images(3, seed=230)
        before = servable.calls
        outputs = scheduler.run(servable, "serving_default", {"images": images}, ["scores"])
    finally:
        scheduler.stop()
    assert servable.calls - before == 1
    assert outputs["scores"].shape == (3, len(tiny_model.LABELS))
    np.testing.assert_allclose(outputs["scores"], tiny_model.expected_scores(images, 1), atol=1e-6)


def test_full_queue_is_unavailable(servable: Servable) -> None:
    # No batch threads yet: the first task's batch waits in the queue, the second is refused.
    scheduler = BatchScheduler(
        BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    )
    images = {"images": tiny_model.random_images(1, seed=231)}
    results: list[dict[str, np.ndarray]] = []
    first = threading.Thread(
        target=lambda: results.append(
            scheduler.run(servable, "serving_default", images, ["scores"])
        )
    )
    first.start()
    try:
        deadline = time.monotonic() + 60  # safety bound only
        while scheduler.enqueued_batches() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(Unavailable, match="queue to which this task was submitted is full"):
            scheduler.run(servable, "serving_default", images, ["scores"])
    finally:
        scheduler.start()
        first.join(timeout=60)
        scheduler.stop()
    assert len(results) == 1


def test_inputs_with_different_row_counts_are_refused(servable: Servable) -> None:
    scheduler = BatchScheduler(BatchingParameters())
    with pytest.raises(InvalidArgument, match="must have equal 0th-dimension size"):
        scheduler.run(
            servable,
            "serving_default",
            {"a": np.zeros((1, 2)), "b": np.zeros((2, 2))},
            ["scores"],
        )
