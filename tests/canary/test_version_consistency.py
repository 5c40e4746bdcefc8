"""Issue 12's reproduction: two model versions behind one round-robin gRPC target (a rolling
update as the gateway sees it), under concurrent load, with real model servers and photos.

Version 3 is the demo network with its classes in reverse order (no class keeps its place),
version 4 the same at a 96x96 input: an answer labelled with the other version's description
has the wrong top class, and a photo resized for the other version fails in the model. Every
answer must carry the top class its own version gives in this process, or be a 503 with
Retry-After.
"""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks import model_versions
from tests.canary.support import DEMO_VERSION, Versions, rollout

ROUNDS = 4  # each photo sent this many times
CLIENTS = 8  # concurrent requests


@dataclass(frozen=True)
class Answer:
    """What the gateway said about one photo."""

    photo: Path
    status: int
    retry_after: str | None
    body: dict[str, Any]

    @property
    def version(self) -> int:
        model = self.body["model"]
        assert isinstance(model, dict)
        return int(model["version"])

    @property
    def code(self) -> str:
        error = self.body.get("error")
        return str(error["code"]) if isinstance(error, dict) else ""


def classify_all(base: str, photos: list[Path], rounds: int = ROUNDS) -> list[Answer]:
    """Upload every photo `rounds` times, in random order, from CLIENTS threads at once."""
    work = [photo for photo in photos for _ in range(rounds)]
    random.Random(12).shuffle(work)

    def upload(photo: Path) -> Answer:
        response = requests.post(
            f"{base}/predict", files={"file": (photo.name, photo.read_bytes())}, timeout=60
        )
        return Answer(photo, response.status_code, response.headers.get("Retry-After"),
                      response.json())  # fmt: skip

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(upload, work))


@pytest.mark.slow
@pytest.mark.parametrize(("pair", "other"), [("reordered", 3), ("resized", 4)])
def test_two_versions_behind_one_target_give_no_mislabelled_answer(
    versions: Versions, photos: list[Path], logs: Path, pair: str, other: int
) -> None:
    expected = {
        version: dict(
            zip(photos, model_versions.top_classes(versions.folder(version), photos), strict=True)
        )
        for version in (DEMO_VERSION, other)
    }
    labels: dict[int, list[str]] = {
        version: model_versions.description(versions.folder(version))["labels"]
        for version in (DEMO_VERSION, other)
    }
    if pair == "reordered":  # the same classifier: only the order of its labels differs
        assert expected[DEMO_VERSION] == expected[other]
        assert labels[DEMO_VERSION] == list(reversed(labels[other]))

    # a short description TTL makes the gateway re-resolve often, as during a rollout
    with rollout(
        versions.demo, getattr(versions, pair), logs, pair, GATEWAY_MODEL_INFO_TTL_SECONDS="1"
    ) as gateway:
        answers = classify_all(gateway.url, photos)

    answered = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status != 200]
    mislabelled = [a for a in answered if a.body["top"] != expected[a.version][a.photo]]
    assert mislabelled == []
    for answer in answered:
        assert list(answer.body["scores"]) == labels[answer.version]
    assert [(a.status, a.code) for a in refused if a.status != 503 or not a.retry_after] == []
    assert {a.code for a in refused} <= {"model_version_unavailable", "model_unavailable"}
    by_version = Counter(a.version for a in answered)
    assert set(by_version) == {DEMO_VERSION, other}  # both servers really answered
    print(
        f"\n{pair}: {len(answers)} requests, answered {dict(by_version)}, "
        f"503 {len(refused)} ({Counter(a.code for a in refused)}), mislabelled 0"
    )
