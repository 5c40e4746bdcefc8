"""Canary routing and shadow comparison through the real stack: one model server whose
config labels two versions `stable` and `canary`, and the gateway in front of it."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import model_versions
from tests.canary.support import DEMO_VERSION, Versions, labelled_server
from tests.model_factories import export_test_model

CANARY_REQUESTS = 2000


def samples(metrics_url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The gateway's samples of one metric (from its metrics port): (labels, value)."""
    text = requests.get(metrics_url, timeout=10).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


@pytest.mark.slow
def test_ten_percent_canary_gets_eight_to_twelve_percent_of_2000_requests(
    tmp_path: Path, photos: list[Path], logs: Path
) -> None:
    # two tiny converted models (versions 1 and 2): the routing is the point, not the model
    export_test_model(tmp_path / "stable", version=1)
    export_test_model(tmp_path / "canary", version=2)
    stable, canary = tmp_path / "stable" / "clothing-model", tmp_path / "canary" / "clothing-model"
    image = photos[0].read_bytes()
    with labelled_server(
        stable, canary, tmp_path / "served", logs, "share", GATEWAY_CANARY_PERCENT="10"
    ) as gateway:

        def upload(_: int) -> tuple[str, int]:
            response = requests.post(
                f"{gateway.url}/predict", files={"file": ("p.jpg", image)}, timeout=60
            )
            assert response.status_code == 200, response.text
            model = response.json()["model"]
            return model["route"], model["version"]

        with ThreadPoolExecutor(8) as pool:
            answers = Counter(pool.map(upload, range(CANARY_REQUESTS)))
        counted = {
            (labels["route"], labels["version"]): value
            for labels, value in samples(gateway.metrics_url, "gateway_version_predictions_total")
            if labels["outcome"] == "ok"
        }
    assert set(answers) == {("stable", 1), ("canary", 2)}  # each label names its version
    share = answers[("canary", 2)] / CANARY_REQUESTS
    assert 0.08 <= share <= 0.12, answers
    assert counted == {
        ("stable", "1"): answers[("stable", 1)],
        ("canary", "2"): answers[("canary", 2)],
    }
    print(f"\ncanary share {share:.2%} of {CANARY_REQUESTS} requests")


@pytest.mark.slow
def test_shadow_mode_answers_with_stable_and_measures_agreement_like_an_in_process_comparison(
    versions: Versions, photos: list[Path], logs: Path, tmp_path: Path
) -> None:
    # canary: the demo at a 96x96 input with its labels reversed, so its scores differ a little
    stable_dir, canary_dir = versions.folder(DEMO_VERSION), versions.folder(4)
    stable_scores = model_versions.scores_by_label(stable_dir, photos)
    canary_scores = model_versions.scores_by_label(canary_dir, photos)
    agree = sum(
        max(s, key=s.__getitem__) == max(c, key=c.__getitem__)
        for s, c in zip(stable_scores, canary_scores, strict=True)
    )
    divergence = sum(
        0.5 * sum(abs(s[label] - c[label]) for label in s)
        for s, c in zip(stable_scores, canary_scores, strict=True)
    )

    with labelled_server(
        versions.demo, versions.resized, tmp_path, logs, "shadow", GATEWAY_SHADOW_PERCENT="100"
    ) as gateway:
        answers = []
        for done, photo in enumerate(photos, start=1):
            response = requests.post(
                f"{gateway.url}/predict", files={"file": (photo.name, photo.read_bytes())},
                timeout=60,
            )  # fmt: skip
            assert response.status_code == 200, response.text
            answers.append(response.json())
            # the comparison runs after the answer; a replay waits for it (the gateway skips
            # comparisons, counted as busy, when more than a few are waiting)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                compared = samples(gateway.metrics_url, "gateway_shadow_comparisons_total")
                skipped = samples(gateway.metrics_url, "gateway_shadow_skipped_total")
                if sum(v for _, v in compared) + sum(v for _, v in skipped) >= done:
                    break
                time.sleep(0.05)
        divergence_sum = samples(gateway.metrics_url, "gateway_shadow_score_divergence_sum")
        skipped = samples(gateway.metrics_url, "gateway_shadow_skipped_total")

    assert [a["model"] for a in answers] == [
        {"name": "clothing-model", "version": DEMO_VERSION, "route": "stable"}
    ] * len(photos)
    for answer, expected in zip(answers, stable_scores, strict=True):
        assert answer["top"] == max(expected, key=expected.__getitem__)
    by_agreement = {labels["agreement"]: value for labels, value in compared}
    assert all(
        labels["stable_version"] == "2" and labels["canary_version"] == "4"
        for labels, _ in compared
    )
    assert by_agreement.get("agree", 0) == agree
    assert by_agreement.get("disagree", 0) == len(photos) - agree
    ((_, measured),) = divergence_sum
    assert measured == pytest.approx(divergence, abs=1e-3 * len(photos))
    assert sum(value for _, value in skipped) == 0
    assert divergence > 0  # the versions really differ, so the comparison is not trivial
    print(
        f"\nshadow: {len(photos)} photos, agreement {agree}/{len(photos)}, "
        f"mean total variation {divergence / len(photos):.4f}"
    )
