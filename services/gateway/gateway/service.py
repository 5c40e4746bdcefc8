"""The classification use cases, free of HTTP: URL, upload and batch to labelled scores."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from gateway.budget import (
    DecodeBudget,
    Reservation,
    container_memory_limit,
    worker_budget,
)
from gateway.errors import GatewayError, ModelVersionUnavailable
from gateway.fetch import FetchedImage
from gateway.images import load_model_input
from gateway.metrics import Metrics
from gateway.predictor import ModelInfo, Prediction, Predictor
from gateway.routing import CANARY, STABLE, Router
from gateway.settings import Settings, SettingsError, env_name

log = logging.getLogger("gateway.service")


# (url, hold): `hold(n)` claims room for n body bytes before they are read (fetch_image's)
Fetcher = Callable[[str, Callable[[int], None]], FetchedImage]


@dataclass(frozen=True)
class ItemResult:
    """One batch item: its image array, or the error that stopped it."""

    url: str
    image: np.ndarray | None = None
    error: GatewayError | None = None
    data: bytes = b""


@dataclass
class Stopwatch:
    """Wall-clock seconds per stage of one request (download, preprocess, model)."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent in the block to `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - started


def model_json(info: ModelInfo) -> dict[str, Any]:
    """The `model` object of an answer: the version that computed it and how it was reached."""
    return {"name": info.name, "version": info.version, "route": info.route}


def scores_json(labels: Sequence[str], row: np.ndarray) -> dict[str, Any]:
    """`top` and `scores` (every label) for one image."""
    scores = {label: float(score) for label, score in zip(labels, row, strict=True)}
    return {"top": labels[int(np.argmax(row))], "scores": scores}


def total_variation(
    labels_a: Sequence[str], row_a: np.ndarray, labels_b: Sequence[str], row_b: np.ndarray
) -> float:
    """Half the sum of absolute score differences, matched by label name (0 same, 1 disjoint)."""
    a: dict[str, float] = dict(zip(labels_a, map(float, row_a), strict=True))
    b: dict[str, float] = dict(zip(labels_b, map(float, row_b), strict=True))
    return 0.5 * sum(abs(a.get(label, 0.0) - b.get(label, 0.0)) for label in a.keys() | b.keys())


# shadow comparisons waiting or running per process; more are skipped (counted), never queued.
# Each holds its request's image bytes (at most GATEWAY_MAX_IMAGE_BYTES) outside the decode
# budget, so this stays small.
SHADOW_IN_FLIGHT = 4
# after a pinned Predict found no replica serving its version: how many times to ask which
# version the route leads to before trying the answer (mid-rollout, replicas disagree)
RESOLVE_ATTEMPTS = 3


class Classifier:
    """Downloads or takes image bytes, prepares them for the model and asks the predictor.

    Each request goes to one model version, chosen by its route (stable or canary): that
    version's description resizes the images, the Predict is pinned to it and its labels name
    the scores. If the version is gone where the request landed (a rollout), the route is
    resolved again and the request retried once with the new version's preprocessing.
    """

    def __init__(
        self,
        settings: Settings,
        predictor: Predictor,
        fetcher: Fetcher,
        metrics: Metrics,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.predictor = predictor
        self.fetcher = fetcher
        self.metrics = metrics
        self.budget = decode_budget(settings)
        self.router = router or Router(settings.canary_percent, settings.shadow_percent)
        # threads start lazily, so creating the pools before a fork is harmless
        self.pool = ThreadPoolExecutor(
            max_workers=settings.download_concurrency, thread_name_prefix="download"
        )
        self.shadow_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")
        self._shadow_slots = threading.BoundedSemaphore(SHADOW_IN_FLIGHT)

    def download(self, url: str, hold: Callable[[int], None]) -> bytes:
        """Fetch an image with the SSRF-safe downloader and record the download metrics."""
        fetched = self.fetcher(url, hold)
        self.metrics.download_seconds.observe(fetched.elapsed)
        self.metrics.download_bytes.observe(len(fetched.data))
        return fetched.data

    def prepare(self, data: bytes, info: ModelInfo, held: Reservation) -> np.ndarray:
        """Checked decode and resize of untrusted bytes; `held` grows to the decode's peak."""
        return load_model_input(
            data,
            info.resize,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
            reservation=held,
        )

    def fetch_and_prepare(
        self, url: str, info: ModelInfo, watch: Stopwatch
    ) -> tuple[bytes, np.ndarray]:
        """Download and decode within the budget: the body's bytes are reserved as the
        download needs them (see fetch_image's `hold`), the decode's peak after."""
        with self.budget.reserve(0) as held:
            with watch.stage("download"):
                data = self.download(url, held.resize)
            held.resize(len(data))
            with watch.stage("preprocess"):
                return data, self.prepare(data, info, held)

    def prepare_again(self, sources: Sequence[bytes], info: ModelInfo) -> np.ndarray:
        """The images decoded again for another version's input (within the budget)."""
        rows = []
        for data in sources:
            with self.budget.reserve(len(data)) as held:
                rows.append(self.prepare(data, info, held))
        return np.stack(rows)

    def predict(
        self, images: np.ndarray, request_id: str, info: ModelInfo, route: str | None = None
    ) -> Prediction:
        """One Predict call for a batch with the version `info` describes, timed and counted."""
        route = route or info.route
        version = str(info.version)
        started = time.perf_counter()
        outcome = "error"
        try:
            prediction = self.predictor.predict(images, request_id, info=info)
            outcome = "ok"
        except GatewayError as exc:
            outcome = exc.code
            raise
        finally:
            seconds = time.perf_counter() - started
            self.metrics.model_seconds.labels("ok" if outcome == "ok" else "error").observe(seconds)
            self.metrics.model_batch_size.observe(len(images))
            self.metrics.version_predictions.labels(route, version, outcome).inc()
            self.metrics.version_seconds.labels(route, version).observe(seconds)
        labels = prediction.model.labels
        for row in prediction.scores:
            self.metrics.version_top_class.labels(route, version, labels[int(np.argmax(row))]).inc()
        return prediction

    def score(
        self, sources: Sequence[bytes], images: np.ndarray, info: ModelInfo, request_id: str
    ) -> Prediction:
        """Predict with `info`'s version; if that version is gone, re-resolve and retry once."""
        try:
            return self.predict(images, request_id, info)
        except ModelVersionUnavailable as exc:
            log.info(
                "retrying with the version %s leads to now: %s",
                info.route,
                exc.message,
                extra={"request_id": request_id},
            )
        fresh = self.predictor.model_info(request_id, route=info.route)
        for _ in range(RESOLVE_ATTEMPTS - 1):
            if fresh.version != info.version:
                break
            # the replica asked may still be an old one naming the version that just failed
            # on every replica gRPC tried; ask again (round robin picks another replica)
            self.predictor.invalidate(info.route)
            fresh = self.predictor.model_info(request_id, route=info.route)
        if fresh.resize != info.resize:
            images = self.prepare_again(sources, fresh)
        return self.predict(images, request_id, fresh)

    def classify_url(
        self, url: str, request_id: str, stopwatch: Stopwatch | None = None
    ) -> dict[str, Any]:
        """Classify the image at a URL."""
        watch = stopwatch or Stopwatch()
        info = self.predictor.model_info(request_id, route=self.router.route())
        data, image = self.fetch_and_prepare(url, info, watch)
        return self._answer_one(data, image, info, request_id, watch)

    def classify_upload(
        self,
        stream: IO[bytes],
        size: int,
        request_id: str,
        stopwatch: Stopwatch | None = None,
        held: Reservation | None = None,
    ) -> dict[str, Any]:
        """Classify an uploaded image of `size` bytes, read into memory within the budget
        (`held` when the caller already reserved the request body, else a new reservation)."""
        watch = stopwatch or Stopwatch()
        info = self.predictor.model_info(request_id, route=self.router.route())
        with nullcontext(held) if held is not None else self.budget.reserve(0) as reservation:
            reservation.resize(max(reservation.nbytes, size))
            data = stream.read(size)
            with watch.stage("preprocess"):
                image = self.prepare(data, info, reservation)
        return self._answer_one(data, image, info, request_id, watch)

    def _answer_one(
        self, data: bytes, image: np.ndarray, info: ModelInfo, request_id: str, watch: Stopwatch
    ) -> dict[str, Any]:
        images = image[np.newaxis]
        with watch.stage("model"):
            prediction = self.score([data], images, info, request_id)
        self.shadow([data], images, prediction, request_id)
        return {
            "model": model_json(prediction.model),
            **scores_json(prediction.model.labels, prediction.scores[0]),
        }

    def classify_batch(
        self,
        urls: Sequence[str],
        request_id: str,
        on_item_error: Callable[[GatewayError], None],
        stopwatch: Stopwatch | None = None,
    ) -> dict[str, Any]:
        """Download every URL concurrently, then score all good images in one Predict call."""
        watch = stopwatch or Stopwatch()
        info = self.predictor.model_info(request_id, route=self.router.route())

        def load(url: str) -> ItemResult:
            try:
                data, image = self.fetch_and_prepare(url, info, Stopwatch())
                return ItemResult(url, image=image, data=data)
            except GatewayError as exc:
                return ItemResult(url, error=exc)

        with watch.stage("images"):  # downloads and preprocessing overlap: one wall time
            items = list(self.pool.map(load, urls))
        good = [item for item in items if item.image is not None]
        rows: list[np.ndarray] = []
        model = info
        if good:
            sources = [item.data for item in good]
            images = np.stack([item.image for item in good if item.image is not None])
            with watch.stage("model"):
                prediction = self.score(sources, images, info, request_id)
            self.shadow(sources, images, prediction, request_id)
            model, rows = prediction.model, list(prediction.scores)
        results: list[dict[str, Any]] = []
        row_iter = iter(rows)
        for item in items:
            if item.error is not None:
                on_item_error(item.error)
                results.append({"url": item.url, **item.error.to_dict()})
            else:
                results.append({"url": item.url, **scores_json(model.labels, next(row_iter))})
        return {"model": model_json(model), "results": results}

    # -- shadow mode ------------------------------------------------------------------------
    def shadow(
        self, sources: Sequence[bytes], images: np.ndarray, stable: Prediction, request_id: str
    ) -> None:
        """For the sampled share of stable answers, score the same images with canary later."""
        if stable.model.route != STABLE or not self.router.shadow():
            return
        if not self._shadow_slots.acquire(blocking=False):
            self.metrics.shadow_skipped.labels("busy").inc()
            return
        try:
            self.shadow_pool.submit(self._compare, sources, images, stable, request_id)
        except RuntimeError:  # the pool is shut down: the worker is stopping
            self._shadow_slots.release()

    def _compare(
        self, sources: Sequence[bytes], images: np.ndarray, stable: Prediction, request_id: str
    ) -> None:
        try:
            canary = self.predictor.model_info(request_id, route=CANARY)
            if canary.route != CANARY or canary.version == stable.model.version:
                self.metrics.shadow_skipped.labels("no_canary").inc()
                return
            if canary.resize != stable.model.resize:
                images = self.prepare_again(sources, canary)
            other = self.predict(images, request_id, canary, route="shadow")
        except GatewayError as exc:
            self.metrics.shadow_skipped.labels("canary_error").inc()
            log.warning(
                "shadow prediction failed: %s", exc.message, extra={"request_id": request_id}
            )
            return
        finally:
            self._shadow_slots.release()
        versions = (str(stable.model.version), str(canary.version))
        for row_s, row_c in zip(stable.scores, other.scores, strict=True):
            top_s = stable.model.labels[int(np.argmax(row_s))]
            top_c = canary.labels[int(np.argmax(row_c))]
            agreement = "agree" if top_s == top_c else "disagree"
            self.metrics.shadow_comparisons.labels(*versions, agreement).inc()
            self.metrics.shadow_divergence.labels(*versions).observe(
                total_variation(stable.model.labels, row_s, canary.labels, row_c)
            )


def decode_budget(settings: Settings) -> DecodeBudget:
    """This worker's decode memory budget, from the container's limit and the worker count."""
    limit, source = container_memory_limit(settings.memory_limit_bytes)
    capacity = worker_budget(limit, settings.workers, settings.worker_baseline_bytes)
    if capacity < 32 * 1024 * 1024:
        raise SettingsError(
            f"a memory limit of {limit} bytes (from {source}) leaves {capacity} bytes per "
            f"worker for decoding images with {env_name('workers')}={settings.workers} and "
            f"{env_name('worker_baseline_bytes')}={settings.worker_baseline_bytes}; "
            "give the container more memory or run fewer workers"
        )
    log.info(
        "decode budget %d MiB per worker (memory limit %d MiB from %s, %d workers)",
        capacity >> 20, limit >> 20, source, settings.workers,
    )  # fmt: skip
    return DecodeBudget(capacity, settings.decode_wait, settings.retry_after)
