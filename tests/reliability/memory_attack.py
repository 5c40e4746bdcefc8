"""Decompression bombs against the real gateway inside a memory cgroup with the pod's limit.

    python -m tests.reliability.memory_attack [--seconds 60] [--gateway-dir DIR] [--label L]

starts the model server, a loopback image host with the bombs, and gunicorn (production
settings: the sizing the Pulumi program declares) inside a cgroup v1 memory cgroup limited to
the declared container memory; then, at once: 24 concurrent uploads of the issue's 40 Mpx
PNG, 32-URL batches of it and of the largest PNG each format cap lets through, the worst image
of every format (at its cap and at 40 Mpx), huge-dimension headers, and real photos from the
dataset uploaded by 4 clients throughout. It writes the figures to
build/reliability/memory-<label>.json for docs/reliability.md. `--gateway-dir` runs another
checkout's gateway (e.g. `git archive <commit> services/gateway | tar -x -C /tmp/base`) to
measure a baseline. tests/reliability/test_memory.py runs the short form (one round).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from clothing_tools.local_stack import (
    GATEWAY_DIR,
    Running,
    free_port,
    start_model_server,
    stop,
    wait_until_ready,
)
from clothing_tools.local_stack import http_get as local_get
from tests.helpers import DATASET_DIR, DEMO_MODEL_BASE, GATEWAY_PYTHON, REPO_ROOT
from tests.reliability import bombs, hostile
from tests.reliability.memcg import MemoryCgroup
from tests.reliability.sizing import DeclaredSizing

FIGURES = REPO_ROOT / "build" / "reliability"
CAP_SIDE = 4000  # 16 Mpx: the PNG, GIF and BMP cap (gateway.budget.PIXEL_CAPS)
WEBP_CAP_SIZE = (2828, 2828)  # 8 Mpx: the WebP cap
PHOTO_CLIENTS = 4
CLIENT_TIMEOUT = 120.0
# The declared settings that decide memory; the pod's others (binds, API keys, metrics) are
# not for a loopback test gateway.
MEMORY_SETTINGS = frozenset({
    "GATEWAY_WORKER_BASELINE_BYTES", "GATEWAY_DECODE_WAIT_SECONDS", "GATEWAY_MAX_IMAGE_BYTES",
    "GATEWAY_MAX_IMAGE_PIXELS", "GATEWAY_MAX_BODY_BYTES", "GATEWAY_BATCH_MAX_URLS",
    "GATEWAY_DOWNLOAD_CONCURRENCY",
})  # fmt: skip
SIGKILL_LINE = re.compile(r"was sent SIGKILL|Perhaps out of memory|WORKER TIMEOUT")


@dataclass
class Outcome:
    """One request's answer as a client saw it."""

    kind: str
    hostile: bool
    status: int  # 0: no HTTP answer (connection dropped, reset or timed out)
    code: str | None = None
    retry_after: str | None = None
    seconds: float = 0.0
    error: str | None = None
    items: dict[str, int] = field(default_factory=dict)  # batch: item outcome -> count

    @property
    def acceptable(self) -> bool:
        """200, a 4xx with its JSON code, or 503 with a code and Retry-After; photos: 200."""
        if not self.hostile:
            return self.status == 200
        if self.status == 200:
            return True
        if 400 <= self.status < 500:
            return self.code is not None
        return self.status == 503 and self.code is not None and self.retry_after is not None


def post(kind: str, hostile_request: bool, url: str, **kwargs: Any) -> Outcome:
    """Send one request and record how it was answered."""
    started = time.perf_counter()
    try:
        response = requests.post(url, timeout=CLIENT_TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        return Outcome(kind, hostile_request, 0, seconds=time.perf_counter() - started,
                       error=f"{type(exc).__name__}: {exc}"[:200])  # fmt: skip
    seconds = time.perf_counter() - started
    try:
        body = response.json()
    except ValueError:
        body = {}
    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
    items: Counter[str] = Counter()
    for result in body.get("results", []) if isinstance(body, dict) else []:
        items[result["error"]["code"] if "error" in result else "scored"] += 1
    return Outcome(kind, hostile_request, response.status_code, code,
                   response.headers.get("Retry-After"), seconds, items=dict(items))  # fmt: skip


@dataclass(frozen=True)
class Attack:
    """One kind of hostile request, sent by `clients` concurrent clients."""

    kind: str
    clients: int
    send: Callable[[str], Outcome]


def upload(kind: str, data: bytes, name: str) -> Callable[[str], Outcome]:
    return lambda base: post(kind, True, f"{base}/predict", files={"file": (name, data)})


def batch(kind: str, urls: list[str]) -> Callable[[str], Outcome]:
    return lambda base: post(kind, True, f"{base}/predict/batch", json={"urls": urls})


def attacks(host: hostile.HostileHost) -> list[Attack]:
    """Every hostile request of the run; the image host must serve `host_routes()`."""
    cap = (CAP_SIDE, CAP_SIDE)
    png40 = bombs.png()
    plan = [
        Attack("PNG 40 Mpx upload", 24, upload("PNG 40 Mpx upload", png40, "bomb.png")),
        Attack("batch of 32 PNG 40 Mpx URLs", 1,
               batch("batch of 32 PNG 40 Mpx URLs", [host.url("/png40.png")] * 32)),
        Attack("batch of 32 PNG 16 Mpx URLs", 1,
               batch("batch of 32 PNG 16 Mpx URLs", [host.url("/png16.png")] * 32)),
    ]  # fmt: skip
    singles = {
        "PNG palette+tRNS 16 Mpx": bombs.png(cap, 3, transparent=True),
        "PNG RGBA rotated 16 Mpx": bombs.png(cap, 6, rotated=True),
        "WebP RGBA 8 Mpx": bombs.webp(WEBP_CAP_SIZE),
        "WebP RGBA 40 Mpx": bombs.webp(),
        "GIF 16 Mpx": bombs.gif(cap),
        "GIF 40 Mpx": bombs.gif(),
        "BMP RLE8 16 Mpx": bombs.bmp_rle8(cap),
        "BMP 1-bit 40 Mpx": bombs.bmp_1bit(bombs.BOMB_SIZE),
        "JPEG progressive 16 Mpx": bombs.jpeg(cap, progressive=True),
        "JPEG progressive 40 Mpx": bombs.jpeg(progressive=True),
        "JPEG baseline 40 Mpx": bombs.jpeg(),
        "PNG header 65535x65535": bombs.header_only("PNG", (65535, 65535)),
        "GIF header 65535x65535": bombs.header_only("GIF", (65535, 65535)),
        "BMP header 30000x30000": bombs.header_only("BMP", (30000, 30000)),
    }
    plan += [Attack(kind, 2, upload(kind, data, "bomb")) for kind, data in singles.items()]
    return plan


def host_routes() -> dict[str, hostile.Route]:
    """The image host's bombs for the batches."""
    return {
        "/png40.png": hostile.body(bombs.png(), "image/png"),
        "/png16.png": hostile.body(bombs.png((CAP_SIDE, CAP_SIDE), 3, transparent=True),
                                   "image/png"),
    }  # fmt: skip


def real_photos(count: int = 24) -> list[bytes]:
    """Validation photos from the dataset, a few of every class."""
    per_class = max(1, count // 10)
    chosen: list[bytes] = []
    for class_dir in sorted((DATASET_DIR / "validation").iterdir()):
        chosen += [p.read_bytes() for p in sorted(class_dir.glob("*.jpg"))[:per_class]]
    return chosen


def run_attack(base: str, plan: list[Attack], photos: list[bytes], seconds: float) -> list[Outcome]:
    """Every attack's clients at once (each repeating until `seconds` pass, at least once),
    with PHOTO_CLIENTS clients uploading real photos until the attacks are over."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    attacks_over = threading.Event()
    deadline = time.monotonic() + seconds

    def record(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)

    def attacker(attack: Attack) -> None:
        while True:
            record(attack.send(base))
            if time.monotonic() >= deadline:
                return

    def photographer(offset: int) -> None:
        sent = offset
        while not attacks_over.is_set() or sent == offset:
            data = photos[sent % len(photos)]
            record(post("real photo upload", False, f"{base}/predict",
                        files={"file": ("photo.jpg", data)}))  # fmt: skip
            sent += 1

    clients = [threading.Thread(target=photographer, args=(i,)) for i in range(PHOTO_CLIENTS)]
    attackers = [
        threading.Thread(target=attacker, args=(attack,))
        for attack in plan
        for _ in range(attack.clients)
    ]
    for thread in clients + attackers:
        thread.start()
    for thread in attackers:
        thread.join()
    attacks_over.set()
    for thread in clients:
        thread.join()
    return outcomes


@contextmanager
def gateway_in_cgroup(
    cgroup: MemoryCgroup,
    model: Running,
    env: dict[str, str],
    log: Path,
    gateway_dir: Path = GATEWAY_DIR,
) -> Iterator[Running]:
    """gunicorn from .venv-gateway with gunicorn.conf.py, every process inside `cgroup`."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    environment.pop("PYTHONPATH", None)
    environment.update(env)
    environment.update({
        "TF_SERVING_HOST": model.grpc_target, "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_ALLOW_PRIVATE_URLS": "true", "PYTHONDONTWRITEBYTECODE": "1",
        "GATEWAY_METRICS_BIND": f"127.0.0.1:{free_port()}",  # loopback only, never 0.0.0.0
    })  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="memcg-") as scratch:
        python = cgroup.wrapper(GATEWAY_PYTHON, Path(scratch))
        with log.open("ab") as out:
            import subprocess

            process = subprocess.Popen(
                [str(python), "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway.wsgi:app"],
                cwd=gateway_dir, env=environment, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until_ready(
                    process, lambda: local_get(f"{url}/readyz")[0] == 200, "the gateway", 90, log
                )
                yield Running(process, url)
            finally:
                stop(process)


def worker_rss_sampler(cgroup: MemoryCgroup, stop_event: threading.Event) -> dict[str, int]:
    """Sample the RSS of every process in the cgroup until `stop_event`; the highest seen."""
    highest: dict[str, int] = {"process_rss_mib": 0, "total_rss_mib": 0}

    def rss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
        except OSError:
            pass
        return 0

    while not stop_event.wait(0.05):
        try:
            sizes = [rss(pid) for pid in cgroup.pids]
        except OSError:
            continue
        if sizes:
            highest["process_rss_mib"] = max(highest["process_rss_mib"], max(sizes))
            highest["total_rss_mib"] = max(highest["total_rss_mib"], sum(sizes))
    return highest


def summarize(
    outcomes: list[Outcome], cgroup: MemoryCgroup, log_text: str, rss: dict[str, int]
) -> dict[str, Any]:
    """The run's figures: answers per kind, failures, OOM kills, memory."""
    kinds: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        entry = kinds.setdefault(outcome.kind, {"requests": 0, "answers": Counter(),
                                                "items": Counter(), "max_s": 0.0,
                                                "hostile": outcome.hostile})  # fmt: skip
        entry["requests"] += 1
        label = str(outcome.status) if outcome.status else "no answer"
        if outcome.code:
            label += f" {outcome.code}"
        entry["answers"][label] += 1
        entry["items"].update(outcome.items)
        entry["max_s"] = round(max(entry["max_s"], outcome.seconds), 2)
    bad = [asdict(o) for o in outcomes if not o.acceptable]
    return {
        "kinds": {
            k: {**v, "answers": dict(v["answers"]), "items": dict(v["items"])}
            for k, v in kinds.items()
        },
        "hostile_requests": sum(o.hostile for o in outcomes),
        "photo_requests": sum(not o.hostile for o in outcomes),
        "photos_ok": sum(o.status == 200 for o in outcomes if not o.hostile),
        "no_answer": sum(o.status == 0 for o in outcomes),
        "unacceptable": len(bad),
        "unacceptable_examples": bad[:10],
        "oom_kills": cgroup.oom_kills,
        "failcnt": cgroup.failcnt,
        "max_usage_mib": round(cgroup.max_usage / 2**20, 1),
        "limit_mib": round(cgroup.limit / 2**20, 1),
        "worker_sigkill_lines": len(SIGKILL_LINE.findall(log_text)),
        **rss,
    }


def measure(
    sizing: DeclaredSizing,
    seconds: float,
    label: str,
    gateway_dir: Path = GATEWAY_DIR,
    plan: Callable[[hostile.HostileHost], list[Attack]] = attacks,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One whole run in a fresh cgroup; the figures (also written to memory-<label>.json)."""
    logs = Path(tempfile.mkdtemp(prefix="memory-attack-"))
    cgroup = MemoryCgroup.create(f"gateway-{label}-{os.getpid()}", sizing.memory_limit)
    declared = {k: v for k, v in sizing.env.items() if k in MEMORY_SETTINGS}
    gateway_env = {**declared, "GATEWAY_WORKERS": str(sizing.workers),
                   "GATEWAY_THREADS": str(sizing.threads),
                   "GATEWAY_MEMORY_LIMIT_BYTES": str(sizing.memory_limit),
                   "GATEWAY_LOG_LEVEL": "WARNING", **(env or {})}  # fmt: skip
    try:
        with (
            start_model_server(DEMO_MODEL_BASE, grpc_port=free_port(), rest_port=free_port(),
                               python=sys.executable, log=logs / "model.log") as model,
            hostile.serve_hostile(host_routes()) as host,
            gateway_in_cgroup(cgroup, model, gateway_env, logs / "gateway.log",
                              gateway_dir) as gateway,
        ):  # fmt: skip
            stop_event = threading.Event()
            rss: dict[str, int] = {}
            sampler = threading.Thread(
                target=lambda: rss.update(worker_rss_sampler(cgroup, stop_event))
            )
            sampler.start()
            started = time.perf_counter()
            outcomes = run_attack(gateway.url, plan(host), real_photos(), seconds)
            elapsed = time.perf_counter() - started
            stop_event.set()
            sampler.join()
            figures = summarize(outcomes, cgroup, (logs / "gateway.log").read_text(), rss)
    finally:
        cgroup.remove()
    figures.update({
        "label": label, "seconds": round(elapsed, 1), "workers": sizing.workers,
        "threads": sizing.threads, "gateway_dir": str(gateway_dir), "load": os.getloadavg(),
        "gateway_log": str(logs / "gateway.log"),
    })  # fmt: skip
    FIGURES.mkdir(parents=True, exist_ok=True)
    target = FIGURES / f"memory-{label}.json"
    partial = target.with_suffix(".json.part")
    partial.write_text(json.dumps(figures, indent=2, sort_keys=True))
    partial.replace(target)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--label", default="long")
    parser.add_argument("--gateway-dir", type=Path, default=GATEWAY_DIR)
    parser.add_argument("--workers", type=int, help="instead of the declared count")
    parser.add_argument("--threads", type=int, help="instead of the declared count")
    args = parser.parse_args(argv)
    from tests.reliability.sizing import declared_gateway_sizing

    sizing = declared_gateway_sizing()
    if args.workers or args.threads:
        sizing = DeclaredSizing(sizing.memory_limit, args.workers or sizing.workers,
                                args.threads or sizing.threads,
                                sizing.memory_limit_from_downward_api, sizing.env)  # fmt: skip
    figures = measure(sizing, args.seconds, args.label, args.gateway_dir)
    print(json.dumps({k: v for k, v in figures.items() if k != "kinds"}, indent=1))
    for kind, entry in figures["kinds"].items():
        print(f"{kind:34s} {entry['requests']:4d}  {entry['answers']}  {entry['items'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
