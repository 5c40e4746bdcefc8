"""Load generation: wrk (Debian's package) for timed runs, a small http.client loop for counts.

wrk keeps `clients` connections busy for a fixed time, each sending its next request as soon as
the previous answer arrived (a closed loop), with bodies taken in turn from a file by
`wrk_post.lua`. Being C, it leaves the two CPUs to the processes under test.
"""

from __future__ import annotations

import http.client
import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.config import BenchError
from benchmarks.stack import cpu_seconds

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
WRK_TIMEOUT = "30s"  # wrk's default of 2 s would count slow answers at 32 clients as errors


@dataclass(frozen=True)
class LoadResult:
    """What one timed run measured; `cpu` holds the CPU seconds of each watched process tree."""

    clients: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    cpu: Mapping[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def cpu_per_request(self, name: str) -> float:
        """CPU seconds of a watched process tree per answered request."""
        return self.cpu.get(name, 0.0) / self.requests if self.requests else 0.0


def pooled(results: Sequence[LoadResult]) -> LoadResult:
    """Runs of one configuration as one: counts, seconds and CPU added up (so rates and CPU per
    request are over every run), the median p50 and the worst p95 and p99."""
    if not results:
        raise ValueError("nothing to pool")
    requests = sum(r.requests for r in results)
    names = {name for result in results for name in result.cpu}
    return LoadResult(
        clients=results[0].clients,
        requests=requests,
        seconds=sum(r.seconds for r in results),
        errors=sum(r.errors for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p95_ms=max(r.p95_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        mean_ms=sum(r.mean_ms * r.requests for r in results) / requests if requests else 0.0,
        cpu={name: sum(r.cpu.get(name, 0.0) for r in results) for name in sorted(names)},
    )


def bodies_file(path: Path, bodies: Sequence[dict[str, Any]]) -> Path:
    """Write one JSON body per line for wrk_post.lua."""
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies), "utf-8")
    return path


def run_wrk(
    url: str,
    bodies: Path,
    clients: int,
    duration: float,
    *,
    warmup: float = 0.0,
    watch: Mapping[str, int] | None = None,
) -> LoadResult:
    """POST the bodies to `url` from `clients` connections for `duration` seconds."""
    if warmup > 0:
        _wrk(url, bodies, clients, warmup)
    pids = dict(watch or {})
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    summary = _wrk(url, bodies, clients, duration)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        clients=clients,
        requests=int(summary["requests"]) - int(summary["status"]),
        seconds=summary["duration_us"] / 1e6,
        errors=int(errors),
        p50_ms=summary["p50_us"] / 1000,
        p95_ms=summary["p95_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        mean_ms=summary["mean_us"] / 1000,
        cpu=cpu,
    )


def _wrk(url: str, bodies: Path, clients: int, duration: float) -> dict[str, float]:
    binary = shutil.which("wrk")
    if binary is None:
        raise BenchError("wrk is not installed; run `make bench-env` (apt-get install wrk)")
    seconds = max(1, round(duration))
    command = [
        binary,
        "--threads",
        str(min(clients, 2)),
        "--connections",
        str(clients),
        "--duration",
        f"{seconds}s",
        "--timeout",
        WRK_TIMEOUT,
        "--script",
        str(WRK_SCRIPT),
        url,
        "--",
        str(bodies),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_SUMMARY "):
            return dict(json.loads(line.removeprefix("WRK_SUMMARY ")))
    raise BenchError(f"wrk gave no summary (exit {done.returncode}): {done.stderr.strip()}")


def post_json(conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, bytes]:
    """POST a JSON body on a kept-alive connection; (status, answer body)."""
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def connection(url: str) -> http.client.HTTPConnection:
    """A keep-alive connection to a loopback base URL."""
    host, port = url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def send_count(
    url: str, bodies: Sequence[dict[str, Any]], count: int, clients: int, limit: float = 180.0
) -> tuple[int, int]:
    """POST `count` bodies to `url`/predict from `clients` threads, stopping after `limit`
    seconds whatever is left; return (answered, non-200 answers)."""
    deadline = time.monotonic() + limit

    def client(offset: int) -> tuple[int, int]:
        answered = failures = 0
        conn = connection(url)
        try:
            for i in range(offset, count, clients):
                if time.monotonic() > deadline:
                    break
                status, _ = post_json(conn, "/predict", bodies[i % len(bodies)])
                answered += 1
                failures += status != 200
        finally:
            conn.close()
        return answered, failures

    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = list(pool.map(client, range(clients)))
    return sum(a for a, _ in outcomes), sum(f for _, f in outcomes)


def timed(call: Any) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started
