"""No request can take down a gateway pod: memory per request is bounded by the decode budget,
the budget fits the pod's declared memory limit, and the gateway survives decompression bombs
inside a memory cgroup with that limit (the kubelet's enforcement, by the kernel)."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from gateway.budget import HEAVY_SHARE, MIB, decode_cost, worker_budget, worst_case_bytes
from gateway.contract import ResizeSpec
from PIL import Image

from tests.reliability import bombs, memory_attack
from tests.reliability import decode_cost as decode_cost_tool
from tests.reliability.memcg import CgroupUnavailable, MemoryCgroup
from tests.reliability.sizing import DeclaredSizing, declared_gateway_sizing
from tests.reliability.support import record_figures

# What the model may ask for: the demo's 112 px, up to Xception's 299 px, with or without draft.
SPECS = [ResizeSpec(112, 112, "bilinear", True), ResizeSpec(299, 299, "bilinear", False)]


@pytest.fixture(scope="module")
def sizing() -> DeclaredSizing:
    """The gateway sizing the Pulumi program declares (run under mocks)."""
    return declared_gateway_sizing()


def worst_accepted_reservation(spec: ResizeSpec) -> int:
    """The largest reservation of any image the format caps let through (the worst cases)."""
    cap, webp = decode_cost_tool.CAP, decode_cost_tool.WEBP_CAP
    worst = [
        bombs.png(cap, 3, transparent=True),
        bombs.png(cap, 6, rotated=True),
        bombs.webp(webp),
        bombs.gif(cap),
        bombs.bmp_rle8(cap),
        bombs.jpeg(cap, progressive=True),
        bombs.jpeg(cap),
    ]
    costs = []
    for data in worst:
        with Image.open(io.BytesIO(data)) as image:
            costs.append(decode_cost(image, spec, 10 * MIB))  # as if 10 MiB on the wire
    return max(costs)


def test_the_declared_workers_at_full_decode_budget_fit_the_declared_memory_limit(
    sizing: DeclaredSizing,
) -> None:
    settings = sizing.settings()
    budget = worker_budget(sizing.memory_limit, settings.workers, settings.worker_baseline_bytes)
    worst = worst_case_bytes(sizing.memory_limit, settings.workers, settings.worker_baseline_bytes)
    largest = max(worst_accepted_reservation(spec) for spec in SPECS)
    record_figures("memory-sizing", {
        "memory_limit_mib": sizing.memory_limit / MIB, "workers": settings.workers,
        "threads": settings.threads, "worker_baseline_mib": settings.worker_baseline_bytes / MIB,
        "worker_budget_mib": budget / MIB, "worst_case_mib": worst / MIB,
        "largest_reservation_mib": round(largest / MIB, 1),
        "memory_limit_from_downward_api": sizing.memory_limit_from_downward_api,
    })  # fmt: skip
    # the budget's limit is the container's own (downward API or cgroup), never a copy of it
    assert sizing.memory_limit_literal is None, (
        "GATEWAY_MEMORY_LIMIT_BYTES is a literal; pass the container's limits.memory through "
        "the downward API (resourceFieldRef) so the two cannot disagree"
    )
    assert worst <= sizing.memory_limit, (
        f"{settings.workers} workers x ({settings.worker_baseline_bytes / MIB:.0f} MiB + "
        f"{budget / MIB:.0f} MiB budget) + master exceed the {sizing.memory_limit / MIB:.0f} MiB "
        "limit the Pulumi program declares"
    )
    # every image the caps accept fits in a worker's share for costly decodes, so none is
    # refused for want of memory that a quieter moment would have
    assert largest <= budget * HEAVY_SHARE, (
        f"the worst accepted image needs {largest / MIB:.0f} MiB; a worker's budget for costly "
        f"decodes is {budget * HEAVY_SHARE / MIB:.0f} MiB with {settings.workers} workers in "
        f"{sizing.memory_limit / MIB:.0f} MiB"
    )


def test_each_reservation_covers_the_measured_peak_of_the_worst_image_of_its_format() -> None:
    rows = decode_cost_tool.measure()
    record_figures("decode-cost", {"rows": rows, "load": os.getloadavg()})
    decoded = [r for r in rows if r["outcome"] == "decoded"]
    assert {r["case"].split()[0] for r in decoded} >= {"PNG", "WebP", "GIF", "BMP", "JPEG"}
    for row in decoded:
        assert row["peak_rss_growth_mib"] <= row["reserved_mib"], row
    for row in rows:
        if "40 Mpx" in row["case"] and row["case"] != "JPEG baseline 40 Mpx":
            assert row["outcome"] == "413 image_too_many_pixels", row


def attack_figures(sizing: DeclaredSizing, seconds: float, label: str) -> dict[str, Any]:
    """One attack run in a cgroup with the declared limit; skips where there is no cgroup."""
    try:
        return memory_attack.measure(sizing, seconds, label)
    except CgroupUnavailable as exc:
        pytest.skip(f"no memory cgroup to enforce the pod's limit: {exc}")


def test_decompression_bombs_under_the_pods_memory_limit_get_answers_and_photos_get_200(
    sizing: DeclaredSizing,
) -> None:
    # `make test`: one round of every attack; `make soak`: each attacker repeats for this long
    seconds = float(os.environ.get("RELIABILITY_MEMORY_SECONDS", "0"))
    figures = attack_figures(sizing, seconds, "long" if seconds else "short")
    kinds = figures["kinds"]
    assert kinds["PNG 40 Mpx upload"]["requests"] >= 24
    assert sum(kinds["batch of 32 PNG 40 Mpx URLs"]["items"].values()) == 32
    assert sum(kinds["batch of 32 PNG 16 Mpx URLs"]["items"].values()) == 32
    assert figures["oom_kills"] == 0, figures
    assert figures["worker_sigkill_lines"] == 0, figures
    assert figures["no_answer"] == 0, figures["unacceptable_examples"]
    assert figures["unacceptable"] == 0, figures["unacceptable_examples"]
    assert figures["photo_requests"] > 0
    assert figures["photos_ok"] == figures["photo_requests"]
    settings = sizing.settings()
    per_worker = settings.worker_baseline_bytes + worker_budget(
        sizing.memory_limit, settings.workers, settings.worker_baseline_bytes
    )
    assert figures["process_rss_mib"] * MIB <= per_worker, figures


def test_the_memory_cgroup_really_kills_past_its_limit() -> None:
    """Control: the cgroup enforces the limit (so the test above could have failed)."""
    try:
        cgroup = MemoryCgroup.create(f"control-{id(object())}", 64 * MIB)
    except CgroupUnavailable as exc:
        pytest.skip(f"no memory cgroup: {exc}")
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    try:
        with tempfile.TemporaryDirectory() as scratch:
            python = cgroup.wrapper(Path(sys.executable), Path(scratch))
            done = subprocess.run(
                [str(python), "-c", "b = bytearray(256 * 1024 * 1024); b[::4096] = b'x' * 65536"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        assert done.returncode == -9
        assert cgroup.oom_kills >= 1
    finally:
        cgroup.remove()
