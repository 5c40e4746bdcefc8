"""Prometheus metrics, correct across gunicorn workers (multiprocess mode).

When `PROMETHEUS_MULTIPROC_DIR` is set (gunicorn.conf.py sets it before any worker starts),
prometheus_client writes every value to per-process files in that directory and `/metrics`
aggregates them; otherwise the values live in this app's own registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BYTES_BUCKETS = tuple(float(4**n * 1024) for n in range(1, 9))  # 4 KiB .. 64 MiB
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The gateway's metrics, registered in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "HTTP request latency",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.download_seconds = Histogram(
            "gateway_download_duration_seconds",
            "image download time",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.download_bytes = Histogram(
            "gateway_download_bytes",
            "size of downloaded images",
            buckets=BYTES_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "gateway_model_duration_seconds",
            "TF Serving Predict latency",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_batch_size = Histogram(
            "gateway_model_batch_size",
            "images per Predict call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "gateway_rejections_total",
            "requests or batch items refused, by error code and reason (e.g. forbidden_url "
            "with reason loopback)",
            ["code", "reason"],
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text for /metrics (aggregated over workers in multiprocess mode)."""
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
