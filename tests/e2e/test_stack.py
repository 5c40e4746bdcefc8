"""End to end: real photos through gunicorn + gateway + model server, against the model's own
answer computed in-process with TensorFlow."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from clothing_tools.local_stack import Running
from tests.e2e.support import photo_url
from tests.gateway.support import assert_documented, concurrently

pytestmark = pytest.mark.slow
AGREEMENT = 0.99


def documented_json(response: requests.Response, path: str, method: str = "POST") -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert_documented(path, method, response.status_code, response.headers["Content-Type"], body)
    return body


def agreement(answers: dict[Path, str], reference: dict[Path, str]) -> float:
    assert answers.keys() == reference.keys()
    return sum(answers[p] == reference[p] for p in answers) / len(answers)


def test_url_predictions_match_the_model(
    gateway: Running, photo_server: str, dataset_dir: Path, photos: list[Path],
    reference: dict[Path, str],
) -> None:  # fmt: skip
    def classify(photo: Path) -> str:
        response = requests.post(
            f"{gateway.url}/predict",
            json={"url": photo_url(photo_server, dataset_dir, photo)},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        body = documented_json(response, "/predict")
        assert body["model"]["name"] == "clothing-model"
        assert sum(body["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        return str(body["top"])

    with ThreadPoolExecutor(4) as pool:
        answers = dict(zip(photos, pool.map(classify, photos), strict=True))
    assert len(photos) >= 60
    assert agreement(answers, reference) >= AGREEMENT


def test_upload_predictions_match_the_model(
    gateway: Running, photos: list[Path], reference: dict[Path, str]
) -> None:
    def classify(photo: Path) -> str:
        with photo.open("rb") as handle:
            response = requests.post(
                f"{gateway.url}/predict", files={"file": (photo.name, handle)}, timeout=60
            )
        assert response.status_code == 200, response.text
        return str(documented_json(response, "/predict")["top"])

    with ThreadPoolExecutor(4) as pool:
        answers = dict(zip(photos, pool.map(classify, photos), strict=True))
    assert agreement(answers, reference) >= AGREEMENT


def test_batch_predictions_match_the_model_in_order(
    gateway: Running, photo_server: str, dataset_dir: Path, photos: list[Path],
    reference: dict[Path, str],
) -> None:  # fmt: skip
    answers: dict[Path, str] = {}
    for start in range(0, len(photos), 31):
        chunk = photos[start : start + 31]
        urls = [photo_url(photo_server, dataset_dir, p) for p in chunk]
        broken = f"{photo_server}/validation/no-such-photo.jpg"
        response = requests.post(
            f"{gateway.url}/predict/batch", json={"urls": [*urls, broken]}, timeout=120
        )
        assert response.status_code == 200, response.text
        results = documented_json(response, "/predict/batch")["results"]
        assert [r["url"] for r in results] == [*urls, broken]
        assert results[-1]["error"]["code"] == "image_host_error"
        answers.update({p: r["top"] for p, r in zip(chunk, results, strict=False)})
    assert agreement(answers, reference) >= AGREEMENT


def test_errors_beside_good_requests(
    gateway: Running, photo_server: str, dataset_dir: Path, photos: list[Path]
) -> None:
    good_url = photo_url(photo_server, dataset_dir, photos[0])
    bad, good = concurrently(
        lambda: requests.post(f"{gateway.url}/predict", data=b"{", timeout=30,
                              headers={"Content-Type": "application/json"}),
        lambda: requests.post(f"{gateway.url}/predict", json={"url": good_url}, timeout=30),
    )  # fmt: skip
    assert bad.status_code == 400 and documented_json(bad, "/predict")["error"]["code"] == (
        "invalid_json"
    )
    assert good.status_code == 200
    not_image = requests.post(
        f"{gateway.url}/predict", files={"file": ("x.txt", b"plain text")}, timeout=30
    )
    assert not_image.status_code == 415
    assert documented_json(not_image, "/predict")["error"]["code"] == "unsupported_image_format"


def _counter(text: str, sample: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample)
    )


def test_metrics_add_up_over_every_worker(gateway: Running, photos: list[Path]) -> None:
    sample = 'gateway_requests_total{method="GET",route="/healthz",status="200"}'
    before = _counter(requests.get(gateway.metrics_url, timeout=10).text, sample)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(lambda _: requests.get(f"{gateway.url}/healthz", timeout=10).status_code,
                     range(40))
        )  # fmt: skip
    assert statuses == [200] * 40
    text = requests.get(gateway.metrics_url, timeout=10).text
    assert _counter(text, sample) - before == 40
    assert "gateway_model_duration_seconds_bucket" in text
    assert "gateway_download_bytes_bucket" in text


def test_request_id_reaches_the_model_server(
    gateway: Running, model_server: Running, photos: list[Path], logs: Path
) -> None:
    with photos[0].open("rb") as handle:
        response = requests.post(
            f"{gateway.url}/predict", files={"file": ("p.jpg", handle)},
            headers={"X-Request-ID": "e2e-trace-4242"}, timeout=60,
        )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "e2e-trace-4242"
    log_text = (logs / "model-server.log").read_text(errors="replace")
    if "x-request-id=" not in log_text:
        pytest.skip("this model server does not log request ids")
    assert re.search(r"Predict .*x-request-id=e2e-trace-4242", log_text)
    gateway_log = (logs / "gateway.log").read_text(errors="replace")
    assert '"request_id": "e2e-trace-4242"' in gateway_log


def test_metrics_are_only_on_the_metrics_port(gateway: Running) -> None:
    public = requests.get(f"{gateway.url}/metrics", timeout=10)
    assert public.status_code == 404
    assert public.json()["error"]["code"] == "not_found"
    private = requests.get(gateway.metrics_url, timeout=10)
    assert private.status_code == 200
    assert private.headers["Content-Type"].startswith("text/plain")
    assert "gateway_requests_total" in private.text
