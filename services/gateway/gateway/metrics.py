"""Prometheus metrics, correct across gunicorn workers (multiprocess mode), served off the
public port.

When `PROMETHEUS_MULTIPROC_DIR` is set (gunicorn.conf.py sets it before any worker starts),
prometheus_client writes every value to per-process files in that directory and a scrape
aggregates them; otherwise the values live in this app's own registry. The scrape endpoint is
not a route of the app: the gunicorn master serves it on GATEWAY_METRICS_BIND
(`serve_metrics`), so the public port never answers `/metrics`.
"""

from __future__ import annotations

import os
import threading
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BYTES_BUCKETS = tuple(float(4**n * 1024) for n in range(1, 9))  # 4 KiB .. 64 MiB
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# total variation distance between two score vectors: 0 identical, 1 disjoint
DIVERGENCE_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


M = TypeVar("M", bound=MetricWrapperBase)


class Labelled(Generic[M]):
    """A labelled metric whose children are looked up once per label values.

    prometheus_client's `labels()` validates and stringifies the values and takes the
    metric's lock on every call; the gateway calls it a few times per request with a small,
    fixed set of values, so the children are kept here (reads of a dict need no lock)."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}
        self._lock = threading.Lock()

    def labels(self, *values: str) -> M:
        """The child for these label values (created on first use)."""
        child = self._children.get(values)
        if child is None:
            with self._lock:
                child = self._children.setdefault(values, self.metric.labels(*values))
        return child


class Metrics:
    """The gateway's metrics, registered in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Labelled(
            Counter(
                "gateway_requests_total",
                "HTTP requests answered",
                ["route", "method", "status"],
                registry=r,
            )
        )
        self.request_seconds = Labelled(
            Histogram(
                "gateway_request_duration_seconds",
                "HTTP request latency",
                ["route", "method", "status"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
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
        self.model_seconds = Labelled(
            Histogram(
                "gateway_model_duration_seconds",
                "TF Serving Predict latency",
                ["outcome"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.model_batch_size = Histogram(
            "gateway_model_batch_size",
            "images per Predict call",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.rejections = Labelled(
            Counter(
                "gateway_rejections_total",
                "requests or batch items refused, by error code and reason (e.g. forbidden_url "
                "with reason loopback)",
                ["code", "reason"],
                registry=r,
            )
        )
        # per model version (route: stable, canary or latest = no version labels)
        self.version_predictions = Labelled(
            Counter(
                "gateway_version_predictions_total",
                "Predict calls per model version, by route and outcome (ok or the error code)",
                ["route", "version", "outcome"],
                registry=r,
            )
        )
        self.version_seconds = Labelled(
            Histogram(
                "gateway_version_predict_duration_seconds",
                "Predict latency per model version",
                ["route", "version"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            )
        )
        self.version_top_class = Labelled(
            Counter(
                "gateway_version_top_class_total",
                "images per top class, per model version",
                ["route", "version", "label"],
                registry=r,
            )
        )
        self.shadow_comparisons = Labelled(
            Counter(
                "gateway_shadow_comparisons_total",
                "images scored by both stable and canary (shadow mode), by top-1 agreement",
                ["stable_version", "canary_version", "agreement"],
                registry=r,
            )
        )
        self.shadow_divergence = Labelled(
            Histogram(
                "gateway_shadow_score_divergence",
                "total variation distance between stable's and canary's scores of one image "
                "(half the sum of absolute differences, by label name)",
                ["stable_version", "canary_version"],
                buckets=DIVERGENCE_BUCKETS,
                registry=r,
            )
        )
        self.shadow_skipped = Labelled(
            Counter(
                "gateway_shadow_skipped_total",
                "shadow comparisons not made, by reason (busy, no_canary, canary_error)",
                ["reason"],
                registry=r,
            )
        )


def scrape_registry(own: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry a scrape reads: the multiprocess directory's files if set, else `own`."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # re-reads the files on every scrape
        return registry
    if own is None:
        raise ValueError("PROMETHEUS_MULTIPROC_DIR is not set and no registry was given")
    return own


def serve_metrics(bind: str, registry: CollectorRegistry) -> WSGIServer:
    """Serve `registry` on `bind` (HOST:PORT, port 0 = any) from a daemon thread.

    prometheus_client's own server (`start_http_server`): the exposition format, content
    negotiation and gzip are the library's, and it logs no request lines.
    """
    host, _, port = bind.rpartition(":")
    server, _thread = start_http_server(int(port), host.strip("[]"), registry)
    return server
