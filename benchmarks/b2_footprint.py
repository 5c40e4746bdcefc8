"""B2: gateway footprint, ours against the seed-style gateway: cold start, memory, disk."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from benchmarks.config import GATEWAY_DIR, GATEWAY_VENV, REPO, SEED_SIZE, SEED_VENV
from benchmarks.context import SEED_MODEL_NAME, Stack
from benchmarks.load import send_count
from benchmarks.report import Section, Target
from benchmarks.stack import (
    Gateway,
    ReadyProbe,
    our_gateway,
    rss_bytes,
    seed_gateway,
    tree_size,
    worker_pids,
)
from clothing_tools.local_stack import free_port

MIB = 1024 * 1024
FIFTH = Target("<=", 0.2)
Launcher = Callable[[int, str], AbstractContextManager[Gateway]]


def launchers(stack: Stack) -> dict[str, Launcher]:
    """Start ours or the seed's gateway on a port, with the benchmark's worker settings."""
    workers, threads = stack.settings.gateway_workers, stack.settings.gateway_threads

    def ours(port: int, name: str) -> AbstractContextManager[Gateway]:
        return our_gateway(
            stack.model_server, workers=workers, threads=threads, log=stack.log(name), port=port
        )

    def seed(port: int, name: str) -> AbstractContextManager[Gateway]:
        return seed_gateway(
            stack.model_server,
            model_name=SEED_MODEL_NAME,
            size=stack.model.height,
            workers=workers,
            threads=threads,
            log=stack.log(name),
            port=port,
        )

    return {"ours": ours, "seed": seed}


def cold_start(launch: Launcher, name: str) -> float:
    """Seconds from starting gunicorn to the first 200 from /readyz."""
    port = free_port()
    probe = ReadyProbe(f"http://127.0.0.1:{port}")
    started = probe.start()
    try:
        with launch(port, name):
            deadline = time.monotonic() + 5
            while probe.ready_at is None and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        probe.close()
    if probe.ready_at is None:
        raise RuntimeError(f"{name}: the launcher saw /readyz answer but the probe did not")
    return probe.ready_at - started


def worker_rss_mib(gateway: Gateway) -> float:
    """Mean RSS of the gateway's gunicorn workers, MiB."""
    sizes = [rss_bytes(pid) for pid in worker_pids(gateway.pid)]
    return statistics.mean(sizes) / MIB


def run(stack: Stack, ours: Gateway, seed: Gateway) -> Section:
    """Cold starts (fresh processes), then memory of the running pair after N requests."""
    settings = stack.settings
    section = Section(
        "B2",
        "gateway footprint",
        f"Both gateways run under gunicorn with {settings.gateway_workers} gthread workers x "
        f"{settings.gateway_threads} threads against the same model server. Cold start: "
        "process start to the first 200 from `/readyz` (polled every 10 ms), median of "
        f"{settings.cold_starts} alternating starts; ours is ready only once it has described "
        "the model over gRPC, the seed-style gateway as soon as it is imported (the seed had no "
        f"readiness check). Memory: mean RSS per worker after {settings.rss_requests} "
        "`/predict` requests (8 clients) to each. Size: every file of the environment "
        "(`.venv-gateway`, built from services/gateway/requirements.txt, against `.venv-seed`, "
        "from benchmarks/requirements-seed.txt) plus the application code.",
    )
    launch = launchers(stack)
    starts: dict[str, list[float]] = {"ours": [], "seed": []}
    for trial in range(settings.cold_starts):
        order = ["ours", "seed"] if trial % 2 == 0 else ["seed", "ours"]
        for name in order:
            starts[name].append(cold_start(launch[name], f"cold-{name}-{trial}"))
    section.add(
        "cold start to ready (median)",
        statistics.median(starts["ours"]),
        "s",
        statistics.median(starts["seed"]),
        FIFTH,
    )
    bodies = [{"url": url} for url in stack.urls()]
    answered: dict[str, tuple[int, int]] = {}
    for gateway in (ours, seed):
        answered[gateway.label] = send_count(gateway.url, bodies, settings.rss_requests, 8)
    requests = min(done for done, _ in answered.values())
    section.add(
        f"RSS per worker after {requests} requests",
        worker_rss_mib(ours),
        "MiB",
        worker_rss_mib(seed),
        FIFTH,
        1,
    )
    ours_size = tree_size(GATEWAY_VENV) + tree_size(GATEWAY_DIR / "gateway")
    seed_size = tree_size(SEED_VENV) + (REPO / "benchmarks" / "seed_gateway.py").stat().st_size
    section.add("installed size", ours_size / MIB, "MiB", seed_size / MIB, FIFTH, 0)
    section.notes.append(
        "cold starts (s): ours "
        + ", ".join(f"{s:.2f}" for s in starts["ours"])
        + "; seed "
        + ", ".join(f"{s:.2f}" for s in starts["seed"])
    )
    if any(failed for _, failed in answered.values()):
        section.notes.append(f"(answered, non-200) during the memory run: {answered}")
    section.notes.append(
        f"the seed-style gateway feeds the same network through a float32 `input_8` twin of the "
        f"demo model (benchmarks/seed_model.py) at the demo size, not {SEED_SIZE}x{SEED_SIZE}"
    )
    return section
