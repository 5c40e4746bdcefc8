"""Measured inputs: read from the latest `make bench` document, and the photos' sizes."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from benchmarks.config import BenchError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
_NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


@dataclass(frozen=True)
class Measured:
    """The figures the capacity report takes from docs/benchmarks.md (and where they came from)."""

    source: str  # the document's first line after the title: when and how it was written
    gateway_cpu_seconds: float  # ours, CPU per answered request at the top B3 concurrency
    gateway_clients: int
    seed_gateway_cpu_seconds: float
    model_cpu_seconds: float  # model server CPU per request with batching on (B4)
    preprocess_cpu_seconds: float  # ours, B1 median CPU per image at the demo model's size
    in_process_batch1_per_second: float  # B5: SavedModel called in process, batch 1
    seed_rss_bytes: float  # B2: RSS per worker of the TensorFlow (seed-style) gateway
    seed_cold_start_seconds: float  # B2: import TensorFlow + load the model, to ready


def _row(document: str, label: str) -> tuple[float, float]:
    """Ours and baseline of a table row whose measure starts with `label`."""
    pattern = re.compile(
        r"^\| " + re.escape(label) + r" \| " + _NUMBER + r" [^|]*\| " + _NUMBER + r" ", re.M
    )
    match = pattern.search(document)
    if not match:
        raise BenchError(f"docs/benchmarks.md has no row {label!r}; run `make bench` first")
    return float(match.group(1).replace(",", "")), float(match.group(2).replace(",", ""))


def _ours_only(document: str, label: str) -> float:
    match = re.search(r"^\| " + re.escape(label) + r" \| " + _NUMBER + " ", document, re.M)
    if not match:
        raise BenchError(f"docs/benchmarks.md has no row {label!r}; run `make bench` first")
    return float(match.group(1).replace(",", ""))


def read_measured(document_path: Path) -> Measured:
    """The figures of one `make bench` document (B1, B2, B3, B4, B5 must all be in it)."""
    try:
        document = document_path.read_text("utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read {document_path}: {exc}") from None
    clients = sorted(int(c) for c in re.findall(r"^\| (\d+) clients: gateway CPU", document, re.M))
    if not clients:
        raise BenchError(f"{document_path} has no B3 CPU rows; run `make bench` first")
    top = clients[-1]
    ours, seed = _row(document, f"{top} clients: gateway CPU per request")
    model = re.search(r"batching on: model server CPU per request " + _NUMBER + " ms", document)
    if not model:
        raise BenchError(f"{document_path} has no B4 'batching on' note; run `make bench` first")
    preprocess, _ = _row(
        document, "112x112 bilinear + JPEG draft (demo model): median CPU ms per image"
    )
    _, rss_mib = _row(document, "RSS per worker after 1000 requests")
    _, cold = _row(document, "cold start to ready (median)")
    written = next(
        (line for line in document.splitlines() if line.startswith("Written by")), "unknown"
    )
    return Measured(
        source=written.split(";")[0],
        gateway_cpu_seconds=ours / 1000,
        gateway_clients=top,
        seed_gateway_cpu_seconds=seed / 1000,
        model_cpu_seconds=float(model.group(1)) / 1000,
        preprocess_cpu_seconds=preprocess / 1000,
        in_process_batch1_per_second=_ours_only(document, "in-process SavedModel, batch 1"),
        seed_rss_bytes=rss_mib * 2**20,
        seed_cold_start_seconds=cold,
    )


def mean_photo_bytes(dataset: Path) -> tuple[float, int]:
    """Mean file size of the dataset's photos, and how many there are."""
    sizes = [
        p.stat().st_size
        for p in dataset.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not sizes:
        raise BenchError(f"no photos under {dataset}")
    return statistics.fmean(sizes), len(sizes)
