"""B5: the ceiling. The SavedModel called in-process with batches, the model server alone over
gRPC, and the whole stack at saturation against gateway worker counts."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import numpy as np

from benchmarks.b3_end_to_end import cpu_share
from benchmarks.config import Model
from benchmarks.context import Stack
from benchmarks.load import LoadResult, bodies_file
from benchmarks.report import Section, Target
from benchmarks.stack import our_gateway

CEILING_BATCHES = (1, 8, 16, 32)
BATCH_CLIENTS = 4  # 4 x 16 URLs in flight: as many images as B3's 32 clients, twice over


def model_images(stack: Stack, count: int) -> np.ndarray:
    """The first photos preprocessed exactly as the gateway does, uint8 NxHxWx3."""
    from gateway.preprocessing import to_model_input

    spec = stack.model.spec
    photos = [stack.photos[i % len(stack.photos)] for i in range(count)]
    return np.stack([to_model_input(photo.data, spec) for photo in photos])


def in_process_ceiling(stack: Stack, seconds: float) -> dict[int, float]:
    """Images per second of the SavedModel's serving_default, per batch size, in this process."""
    import tensorflow as tf
    from gateway.contract import SCORES_OUTPUT, SERVING_SIGNATURE

    serve = tf.saved_model.load(str(stack.model.version_dir)).signatures[SERVING_SIGNATURE]
    images = model_images(stack, max(CEILING_BATCHES))
    rates: dict[int, float] = {}
    for size in CEILING_BATCHES:
        batch = tf.constant(images[:size])
        serve(images=batch)  # warm-up
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds or calls < 2:
            serve(images=batch)[SCORES_OUTPUT].numpy()
            calls += 1
        rates[size] = calls * size / elapsed
    return rates


def model_server_alone(
    model: Model, grpc_target: str, images: np.ndarray, clients: int, seconds: float
) -> float:
    """Predict calls per second (one image each) straight to the model server over gRPC."""
    import grpc
    from gateway.messages import predict_request
    from gateway.predictor import ModelInfo
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    # pinned to the served version, as the gateway pins every Predict
    version = int(model.version_dir.name)
    info = ModelInfo(name=model.name, version=version, labels=model.labels, resize=model.spec)
    requests = [predict_request(info, image[np.newaxis]) for image in images]
    done = [0] * clients
    stop = threading.Event()
    with grpc.insecure_channel(grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(requests[0], timeout=30)

        def client(index: int) -> None:
            while not stop.is_set():
                stub.Predict(requests[(index + done[index]) % len(requests)], timeout=30)
                done[index] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    return sum(done) / elapsed


def ceiling_bound(ceiling: float, best: LoadResult) -> str:
    """The best fraction of the ceiling a stack sharing these CPUs could reach.

    The in-process ceiling keeps every CPU on the model, so an image costs at least
    CPUs / ceiling seconds of CPU; the gateway and the photo server add theirs per request."""
    cpus = os.cpu_count() or 1
    model = cpus / ceiling
    others = best.cpu_per_request("gateway") + best.cpu_per_request("photo server")
    return (
        f"the bound: an image costs the model at least {model * 1000:.1f} ms of CPU "
        f"({cpus} CPUs / {ceiling:.0f} img/s); the gateway and photo server added "
        f"{others * 1000:.1f} ms per request in the best run, so a stack sharing these {cpus} "
        f"CPUs reaches at most {model / (model + others):.2f} of the ceiling, even with a model "
        "server as efficient as the in-process call."
    )


def run(stack: Stack, earlier: Sequence[LoadResult]) -> Section:
    """The ceiling, the model server alone, and wrk at the top concurrency per worker count."""
    settings = stack.settings
    top = max(settings.concurrency)
    section = Section(
        "B5",
        "the ceiling",
        "The ceiling is the SavedModel's `serving_default` called in this process on batches of "
        f"{', '.join(map(str, CEILING_BATCHES))} preprocessed photos "
        f"({settings.ceiling_seconds:g} s each), the best rate counting. The model server "
        f"alone: {top} threads calling Predict (one image each) over gRPC, no gateway. The "
        f"stack: wrk at {top} clients through our gateway with 1, 2 and 4 gunicorn workers "
        f"({settings.gateway_threads} threads each), after the B3/B4 runs; then "
        f"{BATCH_CLIENTS} wrk clients sending `/predict/batch` with {settings.batch_urls} URLs "
        "each (images per second). Ratios here are against the ceiling.",
    )
    ceiling_rates = in_process_ceiling(stack, settings.ceiling_seconds)
    ceiling = max(ceiling_rates.values())
    for size, rate in ceiling_rates.items():
        section.add(f"in-process SavedModel, batch {size}", rate, "img/s", digits=1)
    alone = model_server_alone(
        stack.model, stack.model_server.grpc_target, model_images(stack, 64), top,
        settings.duration,
    )  # fmt: skip
    section.add(f"model server alone, {top} in flight", alone, "img/s", ceiling, digits=1)
    by_workers: dict[int, LoadResult] = {}
    for workers in settings.worker_counts:
        with our_gateway(
            stack.model_server,
            workers=workers,
            threads=settings.gateway_threads,
            log=stack.log(f"gateway-{workers}-workers"),
        ) as gateway:
            by_workers[workers] = stack.load(gateway, top)
    for workers, result in by_workers.items():
        section.add(
            f"stack, {workers} gateway worker(s), {top} clients",
            result.throughput,
            "req/s",
            ceiling,
            digits=1,
        )
        section.notes.append(
            f"{workers} worker(s): p99 {result.p99_ms:.0f} ms; "
            f"CPU use (100 % = one CPU): {cpu_share(result)}"
        )
    urls, size = stack.urls(), settings.batch_urls
    batches = bodies_file(
        stack.work / "batch-bodies.jsonl",
        [{"urls": (urls[i:] + urls[:i])[:size]} for i in range(0, len(urls), size)],
    )
    with our_gateway(
        stack.model_server,
        workers=settings.gateway_workers,
        threads=settings.gateway_threads,
        log=stack.log("gateway-batch-saturation"),
    ) as gateway:
        batched = stack.load(gateway, BATCH_CLIENTS, path="/predict/batch", bodies=batches)
    section.add(
        f"stack, /predict/batch of {size} URLs, {BATCH_CLIENTS} clients",
        batched.throughput * size,
        "img/s",
        ceiling,
        digits=1,
    )
    section.notes.append(
        f"/predict/batch: p99 {batched.p99_ms:.0f} ms per {size}-URL request; "
        f"CPU use: {cpu_share(batched)}"
    )
    best = max(by_workers.values(), key=lambda r: r.throughput)
    section.notes.append(ceiling_bound(ceiling, best))
    saturation = max([r.throughput for r in by_workers.values()] + [r.throughput for r in earlier])
    section.add(
        "stack at saturation, one image per request (best of all runs)",
        saturation,
        "req/s",
        ceiling,
        Target(">=", 0.7),
        1,
    )
    return section
