"""Gateway concurrency for I/O-bound work: one gateway, an image host with fixed latency.

    python -m benchmarks.scaling.concurrency [--latency-ms 300,1000] [--clients 64]
        [--configs 2x8,2x32,...] [--seconds 20]

For each download latency and each gunicorn workers x threads configuration: wrk keeps
`clients` connections busy posting photo URLs, and the run records req/s, p50/p99, errors and
the CPU the gateway tree and the model server used (in CPUs, i.e. CPU seconds per second).
Writes build/scaling/concurrency.json; docs/scaling.md quotes it (benchmarks.scaling.report).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.config import DEFAULT_DATASET, DEFAULT_MODEL_BASE, REPO, BenchError
from benchmarks.load import bodies_file, run_wrk
from benchmarks.photos import load_photos
from benchmarks.scaling.processes import image_host, tree_rss_bytes
from benchmarks.stack import free_port, model_server, our_gateway

OUTPUT = REPO / "build" / "scaling" / "concurrency.json"


@dataclass(frozen=True)
class Point:
    """One measured configuration."""

    latency_ms: float
    workers: int
    threads: int
    clients: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    gateway_cpus: float
    model_cpus: float
    gateway_rss_mib: float


def measure(
    latencies: Sequence[float],
    configs: Sequence[tuple[int, int]],
    clients: int,
    seconds: float,
    work: Path,
) -> list[Point]:
    """Run every (latency, config) pair; the model server is shared, the gateway restarted."""
    photos = load_photos(DEFAULT_DATASET, 200)
    points: list[Point] = []
    model_base = DEFAULT_MODEL_BASE
    with model_server(
        [("clothing-model", model_base)], batching=True, work=work, log=work / "model.log"
    ) as model:
        for latency in latencies:
            with image_host(
                DEFAULT_DATASET, "127.0.0.1", free_port(), latency, 0.0, work / "images.log"
            ) as host:
                bodies = bodies_file(
                    work / "bodies.jsonl", [{"url": f"{host.url}/{p.relative}"} for p in photos]
                )
                for workers, threads in configs:
                    with our_gateway(
                        model, workers=workers, threads=threads, log=work / "gateway.log"
                    ) as gateway:
                        result = run_wrk(
                            f"{gateway.url}/predict",
                            bodies,
                            clients,
                            seconds,
                            warmup=3,
                            watch={"gateway": gateway.pid, "model": model.process.pid},
                        )
                        rss = tree_rss_bytes(gateway.pid) / 2**20
                    point = Point(
                        latency_ms=latency,
                        workers=workers,
                        threads=threads,
                        clients=clients,
                        requests_per_second=round(result.throughput, 1),
                        p50_ms=round(result.p50_ms, 1),
                        p99_ms=round(result.p99_ms, 1),
                        errors=result.errors,
                        gateway_cpus=round(result.cpu["gateway"] / result.seconds, 2),
                        model_cpus=round(result.cpu["model"] / result.seconds, 2),
                        gateway_rss_mib=round(rss, 1),
                    )
                    print(json.dumps(asdict(point)), flush=True)
                    points.append(point)
    return points


def _configs(text: str) -> list[tuple[int, int]]:
    pairs = []
    for part in text.split(","):
        workers, _, threads = part.partition("x")
        pairs.append((int(workers), int(threads)))
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; writes build/scaling/concurrency.json."""
    parser = argparse.ArgumentParser(prog="concurrency", description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", default="300,1000")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--configs", default="2x8,2x32,2x64")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    work = REPO / "build" / "scaling" / "concurrency"
    work.mkdir(parents=True, exist_ok=True)
    try:
        points = measure(
            [float(v) for v in args.latency_ms.split(",")],
            _configs(args.configs),
            args.clients,
            args.seconds,
            work,
        )
    except BenchError as exc:
        print(f"concurrency: error: {exc}", file=sys.stderr)
        return 2
    load = os.getloadavg()
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m benchmarks.scaling.concurrency " + " ".join(argv or sys.argv[1:]),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "uname": subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip(),
        "points": [asdict(p) for p in points],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=1) + "\n")
    partial.replace(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
