"""gateway.service.Classifier without HTTP: batch order, partial failures, one Predict call."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest
from gateway.contract import ResizeSpec
from gateway.errors import (
    DownloadTimeout,
    GatewayError,
    ImageHostError,
    ModelUnavailable,
    ModelVersionUnavailable,
    UndecodableImage,
)
from gateway.fetch import FetchedImage
from gateway.metrics import Metrics
from gateway.predictor import ModelInfo, Prediction, Predictor
from gateway.routing import STABLE
from gateway.service import Classifier, Stopwatch
from gateway.settings import Settings

from tests.gateway.support import COLOURS, ColourPredictor, ScriptedPredictor, image_bytes

RED, GREEN, BLUE = (image_bytes("PNG", COLOURS[name]) for name in ("red", "green", "blue"))


class TableFetcher:
    """A downloader answering from a table: bytes after a delay, or an error to raise."""

    def __init__(self, table: Mapping[str, tuple[float, bytes | GatewayError]]) -> None:
        self.table = table
        self.finished: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, url: str, hold: Callable[[int], None]) -> FetchedImage:
        delay, answer = self.table[url]
        time.sleep(delay)
        with self._lock:
            self.finished.append(url)
        if isinstance(answer, GatewayError):
            raise answer
        return FetchedImage(data=answer, final_url=url, elapsed=delay)


def classifier(fetcher: TableFetcher, predictor: Predictor | None = None) -> Classifier:
    settings = Settings(download_concurrency=4)
    return Classifier(settings, predictor or ColourPredictor(), fetcher, Metrics())


def test_batch_results_follow_the_input_order_not_the_download_order() -> None:
    fetcher = TableFetcher({"a": (0.3, BLUE), "b": (0.2, GREEN), "c": (0.1, RED), "d": (0.0, BLUE)})
    answer = classifier(fetcher).classify_batch(["a", "b", "c", "d"], "r1", lambda exc: None)
    assert fetcher.finished[0] == "d" and fetcher.finished[-1] == "a"  # out of order
    assert [r["url"] for r in answer["results"]] == ["a", "b", "c", "d"]
    assert [r["top"] for r in answer["results"]] == ["blue", "green", "red", "blue"]
    assert answer["model"] == {"name": "colour-model", "version": 3, "route": "latest"}


def test_a_failed_item_spoils_only_its_own_entry_and_the_rest_go_in_one_predict() -> None:
    predictor = ColourPredictor()
    fetcher = TableFetcher(
        {
            "red": (0.0, RED),
            "gone": (0.0, ImageHostError("the image host answered HTTP 404")),
            "green": (0.0, GREEN),
            "slow": (0.0, DownloadTimeout("slow.example did not answer in time")),
            "junk": (0.0, RED[: len(RED) // 2]),  # truncated
            "blue": (0.0, BLUE),
        }
    )
    seen: list[str] = []
    urls = ["red", "gone", "green", "slow", "junk", "blue"]
    answer = classifier(fetcher, predictor).classify_batch(
        urls, "r2", lambda exc: seen.append(exc.code)
    )
    results = answer["results"]
    assert [r["url"] for r in results] == urls
    assert [r.get("top") for r in results] == ["red", None, "green", None, None, "blue"]
    assert results[1]["error"]["code"] == "image_host_error"
    assert results[3]["error"]["code"] == "download_timeout"
    assert results[4]["error"]["code"] == UndecodableImage.code
    assert sorted(seen) == sorted(["image_host_error", "download_timeout", "undecodable_image"])
    assert predictor.batches == [3]  # the three good images, one call


def test_a_batch_without_any_good_image_does_not_call_the_model() -> None:
    predictor = ColourPredictor()
    fetcher = TableFetcher({"x": (0.0, ImageHostError("could not resolve x"))})
    answer = classifier(fetcher, predictor).classify_batch(["x"], "r3", lambda exc: None)
    assert predictor.batches == []
    assert answer["model"] == {"name": "colour-model", "version": 3, "route": "latest"}
    assert answer["results"][0]["error"]["code"] == "image_host_error"


def test_a_model_failure_fails_the_whole_batch() -> None:
    predictor = ScriptedPredictor({"r4": ModelUnavailable("retry later", retry_after=2)})
    fetcher = TableFetcher({"a": (0.0, RED), "b": (0.0, GREEN)})
    with pytest.raises(ModelUnavailable):
        classifier(fetcher, predictor).classify_batch(["a", "b"], "r4", lambda exc: None)


def test_a_url_is_downloaded_prepared_and_scored_with_each_stage_timed() -> None:
    fetcher = TableFetcher({"u": (0.05, GREEN)})
    watch = Stopwatch()
    answer = classifier(fetcher).classify_url("u", "r5", watch)
    assert answer["top"] == "green"
    assert set(answer["scores"]) == {"red", "green", "blue"}
    assert np.isclose(sum(answer["scores"].values()), 1.0)
    assert list(watch.stages) == ["download", "preprocess", "model"]
    assert watch.stages["download"] >= 0.05


def test_uploaded_bytes_skip_the_download() -> None:
    fetcher = TableFetcher({})
    watch = Stopwatch()
    answer = classifier(fetcher).classify_upload(io.BytesIO(BLUE), len(BLUE), "r6", watch)
    assert answer["top"] == "blue" and answer["model"]["version"] == 3
    assert fetcher.finished == []
    assert list(watch.stages) == ["preprocess", "model"]


class RollingPredictor:
    """Version 3 (32x32, red-green-blue) is gone once asked; version 4 (16x16) is reversed."""

    def __init__(self) -> None:
        self.versions = {
            3: ModelInfo("colour-model", 3, ("red", "green", "blue"), ResizeSpec(32, 32)),
            4: ModelInfo("colour-model", 4, ("blue", "green", "red"), ResizeSpec(16, 16)),
        }
        self.current = 3
        self.asked: list[tuple[int, tuple[int, ...]]] = []

    def model_info(
        self, request_id: str, *, allow_stale: bool = False, route: str = STABLE
    ) -> ModelInfo:
        return self.versions[self.current]

    def invalidate(self, route: str | None = None) -> None:
        self.current = 4

    def predict(
        self, images: np.ndarray, request_id: str, *, info: ModelInfo | None = None
    ) -> Prediction:
        assert info is not None
        self.asked.append((info.version, images.shape[1:3]))
        if info.version == 3:
            self.invalidate()
            raise ModelVersionUnavailable("version 3 is gone", retry_after=2)
        assert images.shape[1:3] == (info.resize.height, info.resize.width)
        means = images.reshape(len(images), -1, 3).mean(axis=1)[:, ::-1] / 20.0  # blue first
        exp = np.exp(means - means.max(axis=1, keepdims=True))
        return Prediction(info, exp / exp.sum(axis=1, keepdims=True))


def test_a_version_gone_mid_request_is_retried_with_the_new_versions_size_and_labels() -> None:
    predictor = RollingPredictor()
    answer = classifier(TableFetcher({}), predictor).classify_upload(
        io.BytesIO(RED), len(RED), "r-roll"
    )
    assert predictor.asked == [(3, (32, 32)), (4, (16, 16))]  # prepared again for version 4
    assert answer["model"] == {"name": "colour-model", "version": 4, "route": "latest"}
    assert answer["top"] == "red" and list(answer["scores"]) == ["blue", "green", "red"]


def test_a_second_failure_is_a_503_with_retry_after() -> None:
    predictor = RollingPredictor()
    predictor.versions[4] = predictor.versions[3]  # re-resolving finds the same, gone version
    with pytest.raises(ModelVersionUnavailable) as caught:
        classifier(TableFetcher({}), predictor).classify_upload(io.BytesIO(RED), len(RED), "r-gone")
    assert caught.value.status == 503 and caught.value.retry_after == 2
    assert len(predictor.asked) == 2  # one retry, not more


class DisagreeingReplicas(RollingPredictor):
    """Mid-rollout: after version 3 fails, an old replica still names 3, the next one names 4."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = [3, 3, 4]
        self.described: list[int] = []

    def model_info(
        self, request_id: str, *, allow_stale: bool = False, route: str = STABLE
    ) -> ModelInfo:
        version = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.described.append(version)
        return self.versions[version]

    def invalidate(self, route: str | None = None) -> None:
        pass  # each model_info call asks a replica; which one is the answers' order


def test_a_re_resolution_naming_the_failed_version_again_asks_another_replica() -> None:
    predictor = DisagreeingReplicas()
    answer = classifier(TableFetcher({}), predictor).classify_upload(
        io.BytesIO(RED), len(RED), "r-disagree"
    )
    assert predictor.described == [3, 3, 4]
    assert predictor.asked == [(3, (32, 32)), (4, (16, 16))]
    assert answer["model"]["version"] == 4 and answer["top"] == "red"
