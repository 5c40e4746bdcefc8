"""Sustained load on the real gateway (gunicorn, 2 workers) and the model server, loopback only:
zero errors and memory (RSS of the master and workers) growing under 10% after warm-up.

`make test` runs 30 s; `make soak` runs 10 minutes (RELIABILITY_SOAK_SECONDS=600). Figures go to
build/reliability/soak-short.json or soak-long.json.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

from clothing_tools.local_stack import Running
from tests.reliability.hostile import HostileHost, good_jpeg
from tests.reliability.load import Load, latency_figures
from tests.reliability.support import gunicorn, record_figures

pytestmark = pytest.mark.slow
SECONDS = float(os.environ.get("RELIABILITY_SOAK_SECONDS", "30"))
WARM_UP = min(60.0, max(8.0, SECONDS * 0.25))
CLIENT_THREADS = 4
MAX_GROWTH = 0.10


@pytest.fixture(scope="module")
def soak_gateway(model_server: Running, logs: Path) -> Iterator[Running]:
    """A gateway of its own, so its memory is measured from a fresh start."""
    yield from gunicorn(model_server, logs, "soak-gateway", GATEWAY_ALLOW_PRIVATE_URLS="true")


def mixed_requests(base: str, host: HostileHost) -> Callable[[], requests.Response]:
    """URL, upload and batch requests in turn (every one must succeed)."""
    jpeg = good_jpeg()
    urls = [host.url(p) for p in ("/good.jpg", "/mode-P.png", "/exif-6.jpg", "/anim.gif")]
    kinds: list[Callable[[], requests.Response]] = [
        lambda: requests.post(f"{base}/predict", json={"url": urls[0]}, timeout=30),
        lambda: requests.post(f"{base}/predict", files={"file": ("a.jpg", jpeg)}, timeout=30),
        lambda: requests.post(f"{base}/predict/batch", json={"urls": urls}, timeout=30),
        lambda: requests.post(f"{base}/predict", json={"url": urls[2]}, timeout=30),
    ]
    turn = itertools.count()
    return lambda: kinds[next(turn) % len(kinds)]()


class MemorySampler:
    """RSS of a process and its children, sampled every second in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []  # (monotonic time, MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        processes = [self.process, *self.process.children(recursive=True)]
        return float(sum(p.memory_info().rss for p in processes)) / 2**20

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append((time.monotonic(), self._rss()))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[float]:
        return [mib for moment, mib in self.samples if start <= moment < end]


def test_sustained_load_has_no_errors_and_flat_memory(
    soak_gateway: Running, hostile_host: HostileHost
) -> None:
    master = psutil.Process(soak_gateway.process.pid)
    workers_before = {p.pid for p in master.children()}
    started = time.monotonic()
    with (
        MemorySampler(master.pid) as memory,
        Load(mixed_requests(soak_gateway.url, hostile_host), CLIENT_THREADS) as load,
    ):
        time.sleep(SECONDS)
        load.stop()
    ended = time.monotonic()
    warm = started + WARM_UP
    after_warm_up = memory.between(warm, ended)
    window = max(3, len(after_warm_up) // 10)
    baseline = statistics.mean(after_warm_up[:window])
    final = statistics.mean(after_warm_up[-window:])
    growth = (final - baseline) / baseline
    errors = [s for s in load.samples if s.status != 200]
    measured = load.since(warm)
    figures = {
        "seconds": round(ended - started, 1),
        "warm_up_s": WARM_UP,
        "client_threads": CLIENT_THREADS,
        "requests": len(load.samples),
        "requests_per_s": round(len(measured) / (ended - warm), 1),
        "errors": len(errors),
        "latency_after_warm_up": latency_figures(measured),
        "rss_mib_after_warm_up": round(baseline, 1),
        "rss_mib_at_end": round(final, 1),
        "rss_growth_pct": round(100 * growth, 2),
        "rss_peak_mib": round(max(after_warm_up), 1),
        "workers_replaced": len(workers_before - {p.pid for p in master.children()}),
    }
    record_figures("soak-long" if SECONDS >= 300 else "soak-short", figures)
    assert not errors, errors[:5]
    assert figures["workers_replaced"] == 0
    assert growth < MAX_GROWTH, figures
