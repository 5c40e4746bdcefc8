"""B4: batching. `/predict/batch` against sequential `/predict`, and server-side batching on/off."""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Sequence

from benchmarks.context import Stack
from benchmarks.load import LoadResult, connection, pooled, post_json, timed
from benchmarks.report import Section, Target
from benchmarks.stack import Gateway, model_server, our_gateway


def batch_against_sequential(
    gateway: Gateway, urls: Sequence[str], size: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds of one `/predict/batch` of `size` URLs and of `size` sequential `/predict`."""
    conn = connection(gateway.url)
    batch_s: list[float] = []
    sequential_s: list[float] = []

    def batch(chosen: Sequence[str]) -> None:
        status, body = post_json(conn, "/predict/batch", {"urls": list(chosen)})
        results = json.loads(body).get("results", []) if status == 200 else []
        if status != 200 or any("error" in r for r in results):
            raise RuntimeError(f"/predict/batch answered {status}: {body[:300]!r}")

    def sequential(chosen: Sequence[str]) -> None:
        for url in chosen:
            status, body = post_json(conn, "/predict", {"url": url})
            if status != 200:
                raise RuntimeError(f"/predict answered {status}: {body[:300]!r}")

    try:
        batch(urls[:size])  # warm-up
        sequential(urls[:size])
        for r in range(repeats):
            start = (r * size) % max(1, len(urls) - size)
            chosen = urls[start : start + size]
            steps = [(batch, batch_s), (sequential, sequential_s)]
            for call, seconds in steps if r % 2 == 0 else steps[::-1]:
                seconds.append(timed(functools.partial(call, chosen)))
    finally:
        conn.close()
    return batch_s, sequential_s


def run(stack: Stack, ours: Gateway) -> tuple[Section, list[LoadResult]]:
    """Both comparisons; the second starts a model server without batching beside the first."""
    settings = stack.settings
    size, top = settings.batch_urls, max(settings.concurrency)
    section = Section(
        "B4",
        "batching",
        f"One `/predict/batch` with {size} photo URLs against {size} sequential `/predict` "
        f"calls on one kept-alive connection (median of {settings.batch_repeats} alternating "
        "repeats, different photos each time). Then wrk at "
        f"{top} clients against two gateways side by side, one on the main model server "
        "(server-side batching, services/model/batching_parameters.txt), one on a second model "
        "server of the same model without batching; the two runs alternate, twice.",
    )
    batch_s, sequential_s = batch_against_sequential(
        ours, stack.urls(), size, settings.batch_repeats
    )
    section.add(
        f"{size} URLs: one /predict/batch vs {size} sequential /predict",
        statistics.median(batch_s) * 1000,
        "ms",
        statistics.median(sequential_s) * 1000,
        Target("<=", 1 / 3),
        0,
    )
    workers, threads = settings.gateway_workers, settings.gateway_threads
    off_work = stack.work / "no-batching"
    off_work.mkdir(exist_ok=True)
    model = [(stack.model.name, stack.model.base_path)]
    results: dict[str, list[LoadResult]] = {"on": [], "off": []}
    with (
        model_server(
            model, batching=False, work=off_work, log=stack.log("model-server-no-batching")
        ) as off_server,
        our_gateway(
            stack.model_server, workers=workers, threads=threads, log=stack.log("gateway-on")
        ) as on_gateway,
        our_gateway(
            off_server, workers=workers, threads=threads, log=stack.log("gateway-off")
        ) as off_gateway,
    ):
        for round_ in range(2):
            pairs = [("on", on_gateway, stack.model_server), ("off", off_gateway, off_server)]
            for name, gateway, server in pairs if round_ == 0 else pairs[::-1]:
                results[name].append(
                    stack.load(gateway, top, duration=settings.duration / 2, model_server=server)
                )
    on, off = pooled(results["on"]), pooled(results["off"])
    section.add(
        f"{top} clients: throughput, batching on vs off",
        on.throughput,
        "req/s",
        off.throughput,
        None,
        1,
    )
    section.add(f"{top} clients: p99, batching on vs off", on.p99_ms, "ms", off.p99_ms, None, 1)
    for name, result in (("on", on), ("off", off)):
        section.notes.append(
            f"batching {name}: model server CPU per request "
            f"{result.cpu_per_request('model server') * 1000:.1f} ms, gateway "
            f"{result.cpu_per_request('gateway') * 1000:.1f} ms"
        )
    return section, results["on"]
