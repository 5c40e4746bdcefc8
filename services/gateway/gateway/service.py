"""The classification use cases, free of HTTP: URL, upload and batch to labelled scores."""

from __future__ import annotations

import logging
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
from gateway.errors import GatewayError
from gateway.fetch import FetchedImage
from gateway.images import load_model_input
from gateway.metrics import Metrics
from gateway.predictor import ModelInfo, Prediction, Predictor
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
    """The `model` object of an answer."""
    return {"name": info.name, "version": info.version}


def scores_json(labels: Sequence[str], row: np.ndarray) -> dict[str, Any]:
    """`top` and `scores` (every label) for one image."""
    scores = {label: float(score) for label, score in zip(labels, row, strict=True)}
    return {"top": labels[int(np.argmax(row))], "scores": scores}


class Classifier:
    """Downloads or takes image bytes, prepares them for the model and asks the predictor."""

    def __init__(
        self, settings: Settings, predictor: Predictor, fetcher: Fetcher, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.predictor = predictor
        self.fetcher = fetcher
        self.metrics = metrics
        self.budget = decode_budget(settings)
        # threads start lazily, so creating the pool before a fork is harmless
        self.pool = ThreadPoolExecutor(
            max_workers=settings.download_concurrency, thread_name_prefix="download"
        )

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

    def fetch_and_prepare(self, url: str, info: ModelInfo, watch: Stopwatch) -> np.ndarray:
        """Download and decode within the budget: the body's bytes are reserved as the
        download needs them (see fetch_image's `hold`), the decode's peak after."""
        with self.budget.reserve(0) as held:
            with watch.stage("download"):
                data = self.download(url, held.resize)
            held.resize(len(data))
            with watch.stage("preprocess"):
                return self.prepare(data, info, held)

    def predict(self, images: np.ndarray, request_id: str) -> Prediction:
        """One Predict call for a batch, timed."""
        started = time.perf_counter()
        outcome = "error"
        try:
            prediction = self.predictor.predict(images, request_id)
            outcome = "ok"
            return prediction
        finally:
            self.metrics.model_seconds.labels(outcome).observe(time.perf_counter() - started)
            self.metrics.model_batch_size.observe(len(images))

    def classify_url(
        self, url: str, request_id: str, stopwatch: Stopwatch | None = None
    ) -> dict[str, Any]:
        """Classify the image at a URL."""
        watch = stopwatch or Stopwatch()
        info = self.predictor.model_info(request_id)
        image = self.fetch_and_prepare(url, info, watch)
        return self._answer_one(image, request_id, watch)

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
        info = self.predictor.model_info(request_id)
        with nullcontext(held) if held is not None else self.budget.reserve(0) as reservation:
            reservation.resize(max(reservation.nbytes, size))
            data = stream.read(size)
            with watch.stage("preprocess"):
                image = self.prepare(data, info, reservation)
        return self._answer_one(image, request_id, watch)

    def _answer_one(self, image: np.ndarray, request_id: str, watch: Stopwatch) -> dict[str, Any]:
        with watch.stage("model"):
            prediction = self.predict(image[np.newaxis], request_id)
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
        info = self.predictor.model_info(request_id)

        def load(url: str) -> ItemResult:
            try:
                return ItemResult(url, image=self.fetch_and_prepare(url, info, Stopwatch()))
            except GatewayError as exc:
                return ItemResult(url, error=exc)

        with watch.stage("images"):  # downloads and preprocessing overlap: one wall time
            items = list(self.pool.map(load, urls))
        good = [item.image for item in items if item.image is not None]
        rows: list[np.ndarray] = []
        model = info
        if good:
            with watch.stage("model"):
                prediction = self.predict(np.stack(good), request_id)
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
