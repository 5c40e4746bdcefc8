"""B3: end to end on the local stack, ours against the seed-style gateway, at 1, 8, 32 clients."""

from __future__ import annotations

import os

from benchmarks.context import Stack
from benchmarks.load import LoadResult, pooled
from benchmarks.report import Section, Target
from benchmarks.stack import Gateway

# The gateway tier's cost is its CPU per request (issue 14 asks for at most 0.6x the seed's at
# every concurrency); the throughput and p99 targets apply at the highest concurrency only.
CPU_TARGET = Target("<=", 0.6)


def run_order(ours: Gateway, seed: Gateway, index: int, repeats: int) -> list[Gateway]:
    """Which gateway runs when at the index-th concurrency: mirrored pairs (ours, seed, seed,
    ours, ...), starting with the seed at odd indices, so neither always runs first or right
    after the previous concurrency's load."""
    pair = [ours, seed] if index % 2 == 0 else [seed, ours]
    order: list[Gateway] = []
    for repeat in range(repeats):
        order += pair if repeat % 2 == 0 else pair[::-1]
    return order


def cpu_share(result: LoadResult) -> str:
    """Each watched process's CPU during a run, in % of one CPU."""
    return ", ".join(f"{name} {100 * s / result.seconds:.0f} %" for name, s in result.cpu.items())


def total_cpu_per_request(result: LoadResult) -> float:
    """CPU seconds of every watched process (gateway, model server, photo server) per request."""
    return sum(result.cpu.values()) / result.requests if result.requests else 0.0


def throughput_bound(clients: int, mine: LoadResult, base: LoadResult) -> str:
    """How far ahead of the seed our stack could get on this machine if our gateway were free.

    When the processes together keep every CPU busy, throughput is CPUs / CPU per request; a
    gateway costing nothing leaves the model and photo servers' share of each request."""
    ours_rest = total_cpu_per_request(mine) - mine.cpu_per_request("gateway")
    seed_total = total_cpu_per_request(base)
    busy, cpus = sum(mine.cpu.values()) / mine.seconds, os.cpu_count() or 1
    state = "saturated" if busy >= 0.9 * cpus else "not saturated, so the bound is loose"
    return (
        f"{clients} clients, the bound: all watched processes used {busy:.2f} CPUs of "
        f"{cpus} with ours ({state}). Per request the seed's stack cost "
        f"{seed_total * 1000:.1f} ms of CPU, ours without its gateway "
        f"{ours_rest * 1000:.1f} ms (model and photo servers), so even a gateway using no CPU "
        f"could make ours at most {seed_total / ours_rest:.2f}x the seed's throughput here."
        if ours_rest > 0
        else f"{clients} clients: no CPU figures recorded"
    )


def run(stack: Stack, ours: Gateway, seed: Gateway) -> tuple[Section, list[LoadResult]]:
    """wrk against both gateways at each concurrency, alternating which goes first."""
    settings = stack.settings
    section = Section(
        "B3",
        "end to end on the local stack",
        f"wrk (closed loop, {settings.duration:g} s per point after {settings.warmup:g} s of "
        'warm-up) POSTs `{"url": ...}` for the photos in turn; the photos come from Python\'s '
        "`http.server` with a deep listen backlog (benchmarks/photo_server.py) on 127.0.0.1, "
        "the model server is the development server serving the demo "
        "model with server-side batching as deployed (services/model/batching_parameters.txt). "
        "Baseline: "
        "benchmarks/seed_gateway.py (Flask, keras-image-helper, `tf.make_tensor_proto`, the "
        "demo network behind a float32 `input_8` signature) on the same model server with the "
        "same gunicorn workers and threads. Each gateway runs "
        f"{settings.b3_repeats} time(s) per point in mirrored order (ours, seed, seed, ours; the "
        "next point starts with the seed); requests, seconds and CPU are added over its runs, "
        "p50 is their median, p95 and p99 the worse run's. CPU: user + system seconds of the "
        "gateway's gunicorn master and workers during the measured runs, per answered request.",
    )
    ours_results: list[LoadResult] = []
    top = max(settings.concurrency)
    for index, clients in enumerate(settings.concurrency):
        runs: dict[str, list[LoadResult]] = {"ours": [], "seed": []}
        for gateway in run_order(ours, seed, index, settings.b3_repeats):
            runs[gateway.label].append(stack.load(gateway, clients))
        mine, base = pooled(runs["ours"]), pooled(runs["seed"])
        ours_results.append(mine)
        targeted = clients == top
        section.add(
            f"{clients} clients: throughput",
            mine.throughput,
            "req/s",
            base.throughput,
            Target(">=", 1.5) if targeted else None,
            1,
        )
        for label in ("p50", "p95", "p99"):
            section.add(
                f"{clients} clients: {label} latency",
                getattr(mine, f"{label}_ms"),
                "ms",
                getattr(base, f"{label}_ms"),
                Target("<=", 1.0) if targeted and label == "p99" else None,
                1,
            )
        section.add(
            f"{clients} clients: gateway CPU per request",
            mine.cpu_per_request("gateway") * 1000,
            "ms",
            base.cpu_per_request("gateway") * 1000,
            CPU_TARGET,
            2,
        )
        section.notes.append(
            f"{clients} clients: CPU use, ours: {cpu_share(mine)}; seed: {cpu_share(base)}"
        )
        if targeted:
            section.notes.append(throughput_bound(clients, mine, base))
        for result, label in ((mine, "ours"), (base, "seed")):
            if result.errors:
                section.notes.append(f"{clients} clients, {label}: {result.errors} failed requests")
    return section, ours_results
