"""`python -m benchmarks.scaling [--smoke]`: run the scenarios, then write docs/scaling.md.

See benchmarks/scaling/stack.py for the topology and README "Scaling" for how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.config import DEFAULT_DATASET, REPO, BenchError
from benchmarks.load import bodies_file, run_wrk
from benchmarks.photos import load_photos
from benchmarks.scaling.declared import read_declared
from benchmarks.scaling.processes import image_host
from benchmarks.scaling.promotion import check_answers
from benchmarks.scaling.promotion import prepare as prepare_promotion
from benchmarks.scaling.scenarios import (
    HpaLoop,
    Load,
    failures,
    model_counts,
    percentile,
    read_answers,
    read_requests,
    replace_model_tier,
    request_scale,
    start_load,
)
from benchmarks.scaling.stack import Stack
from clothing_tools.local_stack import common_free_port

OUTPUT = REPO / "build" / "scaling"
SCENARIOS = ("scale_out", "rolling", "promote", "scale_in", "kill", "ramp")
SMOKE_SCENARIOS = ("scale_out", "promote", "scale_in")


def _window(
    load_records: list[tuple[float, float, str]], start: float, end: float
) -> dict[str, Any]:
    latencies = [lat for t, lat, _ in load_records if start <= t < end]
    return {
        "start": round(start, 1),
        "end": round(end, 1),
        "requests": len(latencies),
        "failed": failures(load_records, start, end),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
    }


def _under_steady_load(
    stack: Stack,
    bodies: Path,
    rate: float,
    name: str,
    action: Callable[[], None],
    after: float = 5.0,
) -> tuple[Load, dict[str, Any]]:
    """Steady load through the balancer from 5 s before `action` until `after` s after it."""
    load = start_load(stack, bodies, [(0, rate), (600, rate)], name)
    began = stack.now()
    time.sleep(5)
    action()
    time.sleep(after)
    load.process.terminate()
    load.wait()
    window = _window(read_requests(stack, load), began, stack.now())
    return load, {**window, "requests_file": str(load.out)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario; returns what the report needs."""
    work = args.output / ("smoke" if args.smoke else "run")
    work.mkdir(parents=True, exist_ok=True)
    selected = set(SMOKE_SCENARIOS if args.smoke else args.scenarios.split(","))
    if unknown := selected - set(SCENARIOS):
        raise BenchError(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    declared = read_declared()
    photos = load_photos(DEFAULT_DATASET, 200)
    promotion = (
        prepare_promotion(work, photos, declared.model.flag("model_name") or "clothing-model")
        if "promote" in selected
        else None
    )
    results: dict[str, Any] = {"scenarios": {}}
    port = common_free_port(["127.0.0.1"])
    with image_host(
        DEFAULT_DATASET, "127.0.0.1", port, args.median_ms, args.sigma, work / "images.log"
    ) as host:
        bodies = bodies_file(
            work / "bodies.jsonl", [{"url": f"{host.url}/{p.relative}"} for p in photos]
        )
        stack = Stack(
            declared,
            work,
            host.url,
            gateway_metrics_port=args.gateway_metrics_port,
            channel_arguments=args.channel_arguments,
            model_pre_stop=args.model_pre_stop,
            # the image of a canary rollout (stable N, canary N+1) until the promotion
            model_config=promotion.canary_stage if promotion is not None else None,
        )
        try:
            stack.start_balancer()
            stack.start_scraper()
            # the model tier first, as in a running cluster: a gateway worker that resolves an
            # empty name answers 503 until its next re-resolution (at most every 10 s)
            models = [stack.add("model")]
            stack.wait_ready(models)
            gateways = [stack.add("gateway"), stack.add("gateway")]
            stack.wait_ready(gateways)
            rate = args.rate
            after_ready = 20.0 if args.smoke else 90.0

            # 1. model-tier scale-out: a replica added to a loaded 1-replica tier
            if "scale_out" in selected:
                load = start_load(stack, bodies, [(0, rate), (900, rate)], "scale_out")
                time.sleep(15)
                added = stack.add("model")
                stack.wait_ready([added])
                assert added.ready_at is not None
                # keep the load on until the window after "ready" is over, however long loading took
                time.sleep(max(0.0, added.ready_at + after_ready + 1 - stack.now()))
                load.process.terminate()
                load.wait()
                records = read_requests(stack, load)
                bins: list[dict[str, float | None]] = []
                t = added.ready_at
                while t + 5 <= added.ready_at + after_ready:
                    counts = model_counts(stack, t, t + 5)
                    total = sum(counts.values())
                    bins.append(
                        {"t": round(t - added.ready_at, 1),
                         "share": round(counts.get(added.name, 0) / total, 3) if total else None}
                    )  # fmt: skip
                    t += 5
                first = next(
                    (float(b["t"] or 0) + 5 for b in bins if (b["share"] or 0) >= 0.4), None
                )
                last = model_counts(
                    stack, added.ready_at + after_ready - 10, added.ready_at + after_ready
                )
                results["scenarios"]["scale_out"] = {
                    **_window(records, load.started, stack.now()),
                    "added": added.name,
                    "ready_at": round(added.ready_at, 1),
                    "share_bins": bins,
                    "seconds_to_40_percent": first,
                    "share_last_10s": round(
                        last.get(added.name, 0) / max(sum(last.values()), 1), 3
                    ),
                    "requests_file": str(load.out),
                }
                models.append(added)

            if "rolling" in selected:
                # 2. rolling replacement of every model replica (maxSurge / maxUnavailable declared)
                _, results["scenarios"]["rolling"] = _under_steady_load(
                    stack, bodies, rate, "rolling", lambda: replace_model_tier(stack)
                )

            if promotion is not None:
                # 2b. promote the canary: the same rolling update, to the image without version N
                stack.model_config = promotion.promoted
                stack.note(f"promote: version {promotion.canary} becomes stable")
                load, window = _under_steady_load(
                    stack, bodies, rate, "promote", lambda: replace_model_tier(stack)
                )
                results["scenarios"]["promote"] = {
                    **window,
                    **check_answers(read_answers(load), promotion.expected),
                    "stable": promotion.stable,
                    "canary": promotion.canary,
                }

            # 3. scale-in of one model replica and one gateway replica under steady load
            if "scale_in" in selected:
                extra = stack.add("gateway")
                stack.wait_ready([extra])

                def scale_in() -> None:
                    stack.drain(sorted(stack.tier("model"), key=lambda r: r.started_at)[0])
                    time.sleep(5)
                    stack.drain(sorted(stack.tier("gateway"), key=lambda r: r.started_at)[0])

                _, results["scenarios"]["scale_in"] = _under_steady_load(
                    stack, bodies, rate, "scale_in", scale_in
                )

            if "kill" in selected:
                # 4. kill -9 of one replica of each tier (after the model tier is back to two)
                back = stack.add("model")
                stack.wait_ready([back])
                time.sleep(12)  # let every gateway resolve and connect to it

                def kill() -> None:
                    stack.kill(stack.tier("model")[0])
                    time.sleep(10)
                    stack.kill(stack.tier("gateway")[0])

                _, results["scenarios"]["kill"] = _under_steady_load(
                    stack, bodies, rate, "kill", kill, after=10.0
                )
                # the ReplicaSets replace the killed pods; the ramp starts while they load
                stack.add("model")
                stack.add("gateway")

            # 5. ramp up and down with both HPAs emulated, from 10 req/s to the stack's capacity
            if "ramp" in selected:
                # each tier at its declared minimum, as the HPAs would hold it
                for tier_name, tier in (("model", declared.model), ("gateway", declared.gateway)):
                    present = stack.tier(tier_name, ("starting", "ready"))
                    stack.wait_ready(
                        present + [stack.add(tier_name)
                                   for _ in range(tier.hpa.min_replicas - len(present))]
                    )  # fmt: skip
                time.sleep(12)  # every gateway worker has re-resolved the model tier
                # capacity: closed loop through the load balancer at the minimum replicas
                probe = run_wrk(
                    f"{stack.lb_url}/predict", bodies, args.capacity_clients, 15, warmup=3
                )
                capacity = round(probe.throughput, 1)
                stack.note(f"capacity {capacity} req/s (p99 {probe.p99_ms:.0f} ms)")
                peak = args.peak or round(capacity * args.peak_fraction)
                scale = args.request_scale or request_scale(
                    declared, args.local_max, os.cpu_count() or 1
                )
                hpa = HpaLoop(stack, args.time_scale, args.local_max, request_scale=scale)
                hpa.start()
                up, hold, down, tail = 75.0, 20.0, 75.0, 40.0
                profile = [
                    (0, 10.0), (up, peak), (up + hold, peak),
                    (up + hold + down, 10.0), (up + hold + down + tail, 10.0),
                ]  # fmt: skip
                load = start_load(stack, bodies, profile, "ramp")
                began = stack.now()
                load.wait()
                hpa.stop()
                records = read_requests(stack, load)
                results["scenarios"]["ramp"] = {
                    **_window(records, began, stack.now()),
                    "profile": profile,
                    "capacity": {
                        "requests_per_second": capacity,
                        "clients": args.capacity_clients,
                        "p99_ms": round(probe.p99_ms, 1),
                        "errors": probe.errors,
                    },
                    "peak": peak,
                    "request_scale": round(scale, 3),
                    "decisions": hpa.decisions,
                    "requests_file": str(load.out),
                }
        finally:
            stack.close()
    results.update(
        {
            "declared": {
                "gateway": asdict(declared.gateway),
                "model": asdict(declared.model),
                "channel_arguments": args.channel_arguments or declared.channel_arguments,
                "channel_arguments_source": "--channel-arguments"
                if args.channel_arguments
                else declared.channel_arguments_source,
            },
            "events": stack.log,
            "dropped_flags": sorted(stack.dropped_flags),
            "stack_t0": stack.t0,
            "counts": stack.counts,
            "samples": [asdict(s) for s in stack.samples],
            "settings": {
                "rate": args.rate,
                "peak": args.peak,
                "model_pre_stop": args.model_pre_stop,
                "time_scale": args.time_scale,
                "local_max": args.local_max,
                "median_ms": args.median_ms,
                "sigma": args.sigma,
                "smoke": args.smoke,
                "gateway_metrics_port": args.gateway_metrics_port,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "uname": subprocess.run(
                    ["uname", "-srm"], capture_output=True, text=True
                ).stdout.strip(),
            },
        }
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="benchmarks.scaling", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="short: scale-out, promotion, scale-in (make test)"
    )
    parser.add_argument("--rate", type=float, default=40.0, help="steady offered req/s")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"some of {','.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--peak", type=float, default=None, help="ramp's peak req/s (default: measured)"
    )
    parser.add_argument(
        "--peak-fraction", type=float, default=0.75, help="peak = this x measured capacity"
    )
    parser.add_argument("--capacity-clients", type=int, default=64)
    parser.add_argument(
        "--request-scale",
        type=float,
        default=None,
        help="factor on the declared CPU requests for the HPA (default: fit to this machine)",
    )
    parser.add_argument("--time-scale", type=float, default=0.1, help="HPA seconds per second")
    parser.add_argument("--local-max", type=int, default=4, help="replicas per tier here")
    parser.add_argument("--median-ms", type=float, default=200.0)
    parser.add_argument("--sigma", type=float, default=0.6)
    parser.add_argument(
        "--gateway-metrics-port", type=int, default=None, help="default: a free port"
    )
    parser.add_argument("--channel-arguments", default=None, help="override TF Serving's")
    parser.add_argument(
        "--model-pre-stop", type=float, default=None, help="override the model pods' preStop (s)"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--report", type=Path, default=REPO / "docs" / "scaling.md")
    args = parser.parse_args(argv)
    # absolute: haproxy reads a relative "stats socket" path as host:port
    args.output = args.output.resolve()
    started = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        results = run(args)
    except BenchError as exc:
        print(f"benchmarks.scaling: error: {exc}", file=sys.stderr)
        return 2
    results["machine"]["load_average_at_start"] = load_before
    results["minutes"] = round((time.monotonic() - started) / 60, 1)
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["command"] = "make scale" if not args.smoke else "python -m benchmarks.scaling --smoke"
    name = "smoke.json" if args.smoke else "results.json"
    path = args.output / name
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    if not args.smoke:
        from benchmarks.scaling.report import write_report

        write_report(path, args.report)
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
