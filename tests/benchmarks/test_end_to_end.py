"""B3 runs each gateway more than once per point in mirrored order and pools the runs, so the
CPU ratio is neither decided by which gateway ran first nor by one run."""

from __future__ import annotations

from benchmarks.b3_end_to_end import run_order
from benchmarks.load import LoadResult, pooled
from benchmarks.stack import Gateway

OURS = Gateway("ours", "http://127.0.0.1:1", 1)
SEED = Gateway("seed", "http://127.0.0.1:2", 2)


def result(requests: int, seconds: float, gateway_cpu: float, p99_ms: float) -> LoadResult:
    return LoadResult(
        clients=8,
        requests=requests,
        seconds=seconds,
        errors=1,
        p50_ms=p99_ms / 2,
        p95_ms=p99_ms * 0.9,
        p99_ms=p99_ms,
        mean_ms=p99_ms / 3,
        cpu={"gateway": gateway_cpu},
    )


def test_each_gateway_runs_first_as_often_as_last_and_the_next_point_starts_with_the_seed() -> None:
    assert [g.label for g in run_order(OURS, SEED, 0, 2)] == ["ours", "seed", "seed", "ours"]
    assert [g.label for g in run_order(OURS, SEED, 1, 2)] == ["seed", "ours", "ours", "seed"]
    assert [g.label for g in run_order(OURS, SEED, 2, 1)] == ["ours", "seed"]


def test_pooled_runs_add_counts_and_cpu_and_keep_the_worse_tail() -> None:
    one, two = result(1000, 15.0, 3.0, 40.0), result(500, 15.0, 2.0, 60.0)
    both = pooled([one, two])
    assert (both.requests, both.seconds, both.errors) == (1500, 30.0, 2)
    assert both.throughput == 50.0
    # CPU per request over every request, not the mean of the two runs' figures (2.5 / 3.5 ms)
    assert abs(both.cpu_per_request("gateway") - 5.0 / 1500) < 1e-12
    assert (both.p50_ms, both.p95_ms, both.p99_ms) == (25.0, 54.0, 60.0)
    assert abs(both.mean_ms - (1000 * 40 / 3 + 500 * 60 / 3) / 1500) < 1e-9
    assert pooled([one]) == one
