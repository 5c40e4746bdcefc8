"""Gateway concurrency for I/O-bound work: one gateway, an image host with fixed latency.

    python -m benchmarks.scaling.concurrency [--points 300/2x8/64,300/2x160/64,...]
        [--seconds 20]

Each point is DOWNLOAD_MS/WORKERSxTHREADS/CLIENTS: wrk keeps CLIENTS connections busy
posting photo URLs to one gateway with that gunicorn configuration; the run records req/s,
p50/p99, errors and the CPU the gateway tree and the model server used (in CPUs).
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
from benchmarks.report import write_atomically
from benchmarks.scaling.processes import image_host, tree_rss_bytes
from benchmarks.stack import model_server, our_gateway
from clothing_tools.local_stack import free_port

OUTPUT = REPO / "build" / "scaling" / "concurrency.json"
# today's 2x8 against the default at 300 ms and 64 clients (the case), then 1 s
# downloads with enough clients to load a pod's CPU (~300 in flight)
DEFAULT_POINTS = "300/2x8/64,300/2x160/64,1000/2x8/320,1000/2x160/320"


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
    points: Sequence[tuple[float, int, int, int]], seconds: float, work: Path
) -> list[Point]:
    """Run every (latency, workers, threads, clients) point; one model server, fresh gateways."""
    photos = load_photos(DEFAULT_DATASET, 200)
    measured: list[Point] = []
    with model_server(
        [("clothing-model", DEFAULT_MODEL_BASE)], batching=True, work=work, log=work / "model.log"
    ) as model:
        for latency in sorted({p[0] for p in points}):
            with image_host(
                DEFAULT_DATASET, "127.0.0.1", free_port(), latency, 0.0, work / "images.log"
            ) as host:
                bodies = bodies_file(
                    work / "bodies.jsonl", [{"url": f"{host.url}/{p.relative}"} for p in photos]
                )
                for _, workers, threads, clients in [p for p in points if p[0] == latency]:
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
                    measured.append(point)
    return measured


def _points(text: str) -> list[tuple[float, int, int, int]]:
    points = []
    for part in text.split(","):
        latency, config, clients = part.split("/")
        workers, _, threads = config.partition("x")
        points.append((float(latency), int(workers), int(threads), int(clients)))
    return points


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; writes build/scaling/concurrency.json."""
    parser = argparse.ArgumentParser(prog="concurrency", description=__doc__.splitlines()[0])
    parser.add_argument("--points", default=DEFAULT_POINTS, help="MS/WxT/CLIENTS,...")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    work = REPO / "build" / "scaling" / "concurrency"
    work.mkdir(parents=True, exist_ok=True)
    try:
        points = measure(_points(args.points), args.seconds, work)
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
    write_atomically(args.output, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
