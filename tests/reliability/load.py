"""A small closed-loop load generator for the fault and soak tests (loopback only).

Why our own: the load is a handful of threads each sending one request after another and
recording every outcome with its time, which is what the fault tests read back; wrk or locust
would add a process to drive and parse for no gain at this size.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class Sample:
    """One request: when it started (monotonic), how long it took and how it ended."""

    started: float
    seconds: float
    status: int  # 0: no HTTP answer (connection reset, refused, client timeout)
    code: str | None = None
    retry_after: str | None = None
    error: str | None = None


def measure(send: Callable[[], requests.Response]) -> Sample:
    """Send one request and record its outcome."""
    started = time.monotonic()
    try:
        response = send()
    except requests.RequestException as exc:
        return Sample(started, time.monotonic() - started, 0, error=type(exc).__name__)
    code = None
    if response.status_code != 200:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "not-json"
    return Sample(
        started, time.monotonic() - started, response.status_code, code,
        response.headers.get("Retry-After"),
    )  # fmt: skip


class Load:
    """`threads` threads sending requests back to back until stopped; samples kept in order."""

    def __init__(self, send: Callable[[], requests.Response], threads: int) -> None:
        self.send = send
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = measure(self.send)
            with self._lock:
                self.samples.append(sample)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop and wait for every request in flight (a hung request fails the join)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a load thread is stuck in a request"

    def since(self, moment: float) -> list[Sample]:
        """Samples of the requests started at or after `moment`."""
        with self._lock:
            return [s for s in self.samples if s.started >= moment]


def latency_figures(samples: list[Sample]) -> dict[str, float]:
    """p50, p95, p99 and max latency in milliseconds."""
    seconds = sorted(s.seconds for s in samples)
    if not seconds:
        return {}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive") if len(seconds) > 1 else []

    def pick(p: int) -> float:
        return round(1000 * (cuts[p - 1] if cuts else seconds[0]), 1)

    return {"p50_ms": pick(50), "p95_ms": pick(95), "p99_ms": pick(99),
            "max_ms": round(1000 * seconds[-1], 1)}  # fmt: skip
