"""docs/scaling.md and its plots from build/scaling/results.json (and concurrency.json).

Re-runnable on its own: `python -m benchmarks.scaling.report [RESULTS] [REPORT]`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.config import REPO
from benchmarks.report import write_atomically
from benchmarks.scaling import loadgen
from benchmarks.scaling.concurrency import OUTPUT as CONCURRENCY
from benchmarks.scaling.scenarios import percentile
from benchmarks.scaling.warmup import OUTPUT as WARMUP

BIN = 5.0
TITLES = {
    "scale_out": "model scale-out",
    "rolling": "rolling replacement (model)",
    "promote": "promotion: rolling update to a version with reordered labels",
    "scale_in": "scale-in (model, gateway)",
    "kill": "kill -9 (model, gateway)",
    "ramp": "ramp with HPAs",
}

# the timeline's band names: short, so that neighbouring bands' names do not overlap
PLOT_LABELS = {
    "scale_out": "scale-out",
    "rolling": "rolling",
    "promote": "promotion",
    "scale_in": "scale-in",
    "kill": "kill -9",
    "ramp": "ramp (HPAs)",
}


def _requests(results: dict[str, Any]) -> list[tuple[float, float, str]]:
    records = []
    for scenario in results["scenarios"].values():
        path = Path(scenario["requests_file"])
        for line in path.read_text().splitlines():
            record = loadgen.parse(line)
            records.append((record.start, record.latency, record.outcome))
    return records


def _bins(
    records: list[tuple[float, float, str]], start: float, end: float
) -> list[dict[str, Any]]:
    out = []
    t = start
    while t < end:
        inside = [(lat, o) for s, lat, o in records if t <= s < t + BIN]
        latencies = [lat for lat, o in inside if o.isdigit() and int(o) < 500]
        failed = len([o for _, o in inside if not (o.isdigit() and int(o) < 500)])
        out.append(
            {
                "t": t,
                "offered": len(inside) / BIN,
                "p50": percentile(latencies, 0.5) if latencies else float("nan"),
                "p99": percentile(latencies, 0.99) if latencies else float("nan"),
                "failed": failed,
            }
        )
        t += BIN
    return out


def _model_shares(results: dict[str, Any]) -> tuple[list[float], dict[str, list[float]]]:
    by_replica: dict[str, list[tuple[float, float]]] = {}
    for sample in results["samples"]:
        if sample["tier"] == "model":
            by_replica.setdefault(sample["replica"], []).append(
                (sample["t"], sample["values"].get("predict_OK", 0.0))
            )
    if not by_replica:
        return [], {}
    end = max(t for points in by_replica.values() for t, _ in points)
    times = [i * BIN for i in range(int(end // BIN) + 1)]
    rates: dict[str, list[float]] = {}
    for name, points in by_replica.items():
        series = []
        for t in times:
            inside = [v for s, v in points if t <= s < t + BIN]
            before = [v for s, v in points if s < t]
            base = before[-1] if before else (inside[0] if inside else 0.0)
            series.append(max(0.0, (inside[-1] - base) / BIN) if inside else 0.0)
        rates[name] = series
    return times, rates


def plot_timeline(results: dict[str, Any], target: Path) -> None:
    """Offered load, replicas, p50/p99, failures and model shares over the whole run."""
    records = _requests(results)
    # requests carry time.monotonic() start times; the stack's clock starts at its t0
    offset = results["stack_t0"]
    shifted = [(s - offset, lat, o) for s, lat, o in records]
    end = max((s for s, _, _ in shifted), default=0.0) + BIN
    bins = _bins(shifted, 0.0, end)
    fig, axes = plt.subplots(5, 1, figsize=(11, 13), sharex=True)
    xs = [b["t"] for b in bins]
    axes[0].plot(xs, [b["offered"] for b in bins], color="tab:blue")
    axes[0].set_ylabel("offered req/s")
    for tier, color in (("gateway", "tab:green"), ("model", "tab:purple")):
        points = [(t, ready) for t, name, ready, _ in results["counts"] if name == tier]
        axes[1].step([p[0] for p in points], [p[1] for p in points], where="post", color=color,
                     label=f"{tier} ready")  # fmt: skip
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper left")
    axes[2].plot(xs, [b["p50"] * 1000 for b in bins], label="p50", color="tab:blue")
    axes[2].plot(xs, [b["p99"] * 1000 for b in bins], label="p99", color="tab:red")
    axes[2].axhline(1500, color="grey", linestyle=":", linewidth=1)
    axes[2].set_ylabel("latency ms")
    axes[2].legend(loc="upper left")
    axes[3].bar(xs, [b["failed"] for b in bins], width=BIN, color="tab:red", align="edge")
    axes[3].set_ylabel("failed requests")
    times, rates = _model_shares(results)
    if times:
        axes[4].stackplot(times, *rates.values(), labels=list(rates))
        axes[4].legend(loc="upper left", fontsize=7, ncol=4)
    axes[4].set_ylabel("predictions/s per model replica")
    axes[4].set_xlabel("seconds since the stack started")
    top = axes[0].get_ylim()[1]
    for index, (name, scenario) in enumerate(results["scenarios"].items()):
        for axis in axes:
            axis.axvspan(scenario["start"], scenario["end"], alpha=0.06, color="black")
        # staggered so that short scenarios' names do not overlap
        axes[0].text(scenario["start"], top * (0.92 - 0.1 * (index % 3)),
                     PLOT_LABELS.get(name, name), fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(target, dpi=80)
    plt.close(fig)


def plot_scale_out(results: dict[str, Any], target: Path) -> None:
    """The new model replica's share of predictions after it became ready."""
    bins = results["scenarios"]["scale_out"]["share_bins"]
    fig, axis = plt.subplots(figsize=(8, 3.5))
    axis.plot([b["t"] + BIN for b in bins], [(b["share"] or 0) * 100 for b in bins], marker="o")
    axis.axhline(40, color="grey", linestyle=":")
    axis.axhline(50, color="grey", linestyle="--", linewidth=0.8)
    axis.set_ylim(0, 100)
    axis.set_xlabel("seconds after the new replica became ready")
    axis.set_ylabel("share of predictions %")
    fig.tight_layout()
    fig.savefig(target, dpi=80)
    plt.close(fig)


def plot_concurrency(data: dict[str, Any], target: Path) -> None:
    """req/s and p99 per workers x threads, per download latency."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    latencies = sorted({p["latency_ms"] for p in data["points"]})
    for latency in latencies:
        points = [p for p in data["points"] if p["latency_ms"] == latency]
        labels = [f"{p['workers']}x{p['threads']}\n{p['clients']} cl" for p in points]
        axes[0].plot(labels, [p["requests_per_second"] for p in points], marker="o",
                     label=f"{latency:.0f} ms")  # fmt: skip
        axes[1].plot(labels, [p["p99_ms"] for p in points], marker="o", label=f"{latency:.0f} ms")
    axes[0].set_ylabel("req/s")
    axes[1].set_ylabel("p99 ms")
    axes[1].axhline(1000, color="grey", linestyle=":")
    for axis in axes:
        axis.legend(title="download")
    fig.tight_layout()
    fig.savefig(target, dpi=80)
    plt.close(fig)


def _p99_outside_lag(results: dict[str, Any]) -> tuple[float, float]:
    """p99 (s) of the ramp's requests started while no replica was starting; lag seconds."""
    ramp = results["scenarios"]["ramp"]
    starting: dict[float, int] = {}
    for t, _, _, count in results["counts"]:
        starting[t] = starting.get(t, 0) + count
    lagging = sorted(t for t, count in starting.items() if count and ramp["start"] <= t)
    offset = results["stack_t0"]
    kept = []
    for line in Path(ramp["requests_file"]).read_text().splitlines():
        record = loadgen.parse(line)
        t = record.start - offset
        # counts are sampled every second: a request within 1 s of a "starting" sample lags
        if not any(abs(t - lag) <= 1.0 for lag in lagging):
            kept.append(record.latency)
    return percentile(kept, 0.99), float(len(lagging))


def _ramp_setup(
    s: dict[str, Any], d: dict[str, Any], settings: dict[str, Any], machine: dict[str, Any]
) -> list[str]:
    """The paragraph on how the ramp's peak and the HPAs' CPU requests were chosen."""
    if "ramp" not in s or "capacity" not in s["ramp"]:
        return []
    ramp = s["ramp"]
    capacity = ramp["capacity"]
    scale = ramp["request_scale"]
    gateway, model = d["gateway"]["cpu_request"], d["model"]["cpu_request"]
    return [
        f"Ramp: the stack's capacity at the HPAs' minimum replicas was measured first, closed "
        f"loop through haproxy ({capacity['clients']} connections, 15 s): "
        f"{capacity['requests_per_second']} req/s, p99 {capacity['p99_ms']:.0f} ms, "
        f"{capacity['errors']} errors. The ramp offers 10 req/s rising to {ramp['peak']} req/s "
        f"({ramp['peak'] / capacity['requests_per_second'] * 100:.0f} % of it; above that, "
        "starting replicas, which load TensorFlow, take CPU from those serving, since they "
        "all share this machine) and back. The HPA emulator divides each pod's CPU by its "
        f"declared request x {scale}: at the declared requests, {settings['local_max']} pods "
        f"of each tier would request {settings['local_max'] * (gateway + model):.1f} CPUs of "
        f"this machine's {machine['cpus']}, an overcommit no scheduler allows, and every "
        "utilization would read low by that factor. The factor fits them to the machine and "
        f"keeps the program's ratio between the tiers ({gateway} : {model}); the HPA specs "
        "(target, minimum, maximum, behaviour) are the program's.",
        "",
    ]


def _warmup_section(warmup: dict[str, Any]) -> list[str]:
    """A new pod's first requests after each kind of warm-up."""
    names = {
        "none": "no warm-up",
        "all_outputs": "records fetching every output (the seed's)",
        "records": "the version's records: the gateway's requests (ours)",
    }
    lines = [
        "## A new model pod's first requests",
        "",
        f"`{warmup['command']}` on {warmup['date']} (load average {warmup['load_average']}), "
        f"{warmup['version_dir']}: each case in a fresh process loads the version into a TF1 "
        "DirectSession (TF Serving's loader path), replays its warm-up, then sends the "
        "gateway's Predict (`scores` only, one image) and `describe` (`description` only). "
        "A session builds one executor per set of fetches, so only a warm-up that fetched the "
        "same outputs spares the first user that cost.",
        "",
        "| warm-up | first Predict ms | first describe ms | median Predict ms | median "
        "describe ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in warmup["cases"]:
        lines.append(
            f"| {names.get(case['case'], case['case'])} | {case['first_predict_ms']} | "
            f"{case['first_describe_ms']} | {case['median_predict_ms']} | "
            f"{case['median_describe_ms']} |"
        )
    return [*lines, ""]


def _range(ramp: dict[str, Any], tier: str) -> str:
    """`2 -> 4 -> 2`: the replica counts the HPA emulator went through for a tier."""
    counts = [x["current"] for x in ramp["decisions"] if x["tier"] == tier]
    changes = [x["desired"] for x in ramp["decisions"] if x["tier"] == tier and
               x["desired"] != x["current"]]  # fmt: skip
    path = [counts[0]] if counts else []
    for value in changes:
        if value != path[-1]:
            path.append(value)
    return " -> ".join(str(v) for v in path) or "no decisions"


def _failed(scenario: dict[str, Any]) -> str:
    failed = scenario["failed"]
    return "0" if not failed else ", ".join(f"{k}: {v}" for k, v in sorted(failed.items()))


def write_report(results_path: Path, report: Path) -> None:
    """Write the report and its PNGs next to it."""
    results = json.loads(results_path.read_text())
    images = report.parent / "scaling"
    images.mkdir(parents=True, exist_ok=True)
    plot_timeline(results, images / "timeline.png")
    if "scale_out" in results["scenarios"]:
        plot_scale_out(results, images / "scale_out.png")
    concurrency = json.loads(CONCURRENCY.read_text()) if CONCURRENCY.exists() else None
    if concurrency:
        plot_concurrency(concurrency, images / "concurrency.png")
    s = results["scenarios"]
    d = results["declared"]
    settings = results["settings"]
    machine = results["machine"]
    lines = [
        "# Scaling on a local multi-replica stack",
        "",
        f"`{results['command']}` on {results['date']}, {results['minutes']} min; machine: "
        f"{machine['uname']}, {machine['cpus']} CPUs shared with other work (load average "
        f"{machine['load_average_at_start']} at start, {machine['load_average_at_end']} at "
        "the end). Figures on a busy machine are low; re-run on a quiet one with "
        "`make scale` (the report is rebuilt from `build/scaling/results.json` by "
        "`python -m benchmarks.scaling.report`).",
        "",
        "Topology (all loopback, real processes): model replicas = the TF Serving-compatible "
        "devserver on 127.0.0.2, .3, ... started with the Pulumi program's TF Serving flags, "
        "published under one name by a DNS server on 127.0.0.1 (dnslib); gateway replicas = "
        "gunicorn with production settings on 127.0.1.x, `TF_SERVING_HOST=dns://127.0.0.1:PORT/"
        "name:PORT`; haproxy (TCP mode, health check on /readyz, no retries) as the NLB; an "
        f"image host with log-normal latency (median {settings['median_ms']:.0f} ms, sigma "
        f"{settings['sigma']}); open-loop load (a new connection per request). Metrics are "
        "scraped directly from every replica every second (gateway `/metrics` on "
        "`GATEWAY_METRICS_BIND`, TF Serving's "
        "`/monitoring/prometheus/metrics`), not through a Prometheus server.",
        "",
        "Read from the Pulumi program under Pulumi's mocks: HPA gateway "
        f"{d['gateway']['hpa']['min_replicas']}-{d['gateway']['hpa']['max_replicas']} / model "
        f"{d['model']['hpa']['min_replicas']}-{d['model']['hpa']['max_replicas']} replicas at "
        f"{d['model']['hpa']['target_utilization']:.0f} % CPU of the request "
        f"(gateway {d['gateway']['cpu_request']} CPU, model {d['model']['cpu_request']} CPU), "
        f"scale-down window {d['model']['hpa']['scale_down']['stabilization']:.0f} s; rolling "
        f"update maxSurge {d['model']['max_surge']} / maxUnavailable "
        f"{d['model']['max_unavailable']}; model preStop {d['model']['pre_stop_seconds']:.0f} s; "
        f"TF Serving `--grpc_channel_arguments={d['channel_arguments']}` (from "
        f"{d['channel_arguments_source']}). TF Serving flags the devserver does not "
        f"implement, left out: {', '.join(results.get('dropped_flags', [])) or 'none'}. "
        "The model config file is the image's: "
        + (
            f"during a canary (stable {s['promote']['stable']}, canary "
            f"{s['promote']['canary']}) until the promotion, then the promoted image's "
            f"({s['promote']['canary']} only)."
            if "promote" in s
            else "the repository's model by --model_base_path (no labels)."
        ),
        "",
        f"Time: the HPA emulator runs at {settings['time_scale']} of real time (15 s sync "
        f"period -> {15 * settings['time_scale']:.1f} s, a 300 s window -> "
        f"{300 * settings['time_scale']:.0f} s); connection age, preStop and everything else "
        f"run in real time. At most {settings['local_max']} replicas per tier here. The "
        "gateway's own preStop (25 s, for the NLB's health checks) is 2 s here, as haproxy "
        "stops new connections at once.",
        "",
        *_ramp_setup(s, d, settings, machine),
        "## Figures",
        "",
        "| what | target | measured |",
        "| --- | --- | --- |",
    ]
    if "scale_out" in s:
        so = s["scale_out"]
        lines.append(
            f"| model scale-out: share of the added replica within 90 s of ready | >= 40 % | "
            f"{so['share_last_10s'] * 100:.0f} % in its last 10 s; first 5-s bin >= 40 % ended "
            + (
                f"{so['seconds_to_40_percent']:.0f} s after ready |"
                if so["seconds_to_40_percent"] is not None
                else "never |"
            )
        )
    for key in ("rolling", "promote", "scale_in"):
        if key not in s:
            continue
        lines.append(
            f"| failed requests during {TITLES[key]} ({s[key]['requests']} requests) | 0 | "
            f"{_failed(s[key])} |"
        )
    if "kill" in s:
        lines.append(
            f"| failed requests during {TITLES['kill']} ({s['kill']['requests']} requests) | "
            f"(no target) | {_failed(s['kill'])} |"
        )
    if "promote" in s:
        promote = s["promote"]
        by_version = ", ".join(f"v{v}: {n}" for v, n in promote["answers_by_version"].items())
        lines.append(
            f"| promotion (issue 12): answers labelled by another version's classes / from an "
            f"unknown version | 0 / 0 | {promote['mislabelled']} / "
            f"{promote['unknown_version']} (answers {by_version}) |"
        )
    if "ramp" in s:
        ramp = s["ramp"]
        p99_steady, lag = _p99_outside_lag(results)
        peaks = {
            tier: max(x["desired"] for x in ramp["decisions"] if x["tier"] == tier)
            for tier in ("gateway", "model")
        }
        lines.append(
            f"| ramp 10 -> {ramp['peak']:.0f} -> 10 req/s with HPAs: failed / p99 outside "
            f"the scale-up lag | 0 / < 1.5 s | {_failed(ramp)} / {p99_steady:.2f} s (lag: "
            f"{lag:.0f} s while a replica was starting, excluded; whole ramp p99 "
            f"{ramp['p99_ms'] / 1000:.2f} s) |"
        )
        lines.append(
            "| ramp: the HPAs add and remove replicas of both tiers | both | gateway "
            f"{_range(ramp, 'gateway')}, model {_range(ramp, 'model')} (highest desired: "
            f"gateway {peaks['gateway']}, model {peaks['model']}) |"
        )
    if concurrency:
        base = next(
            (p for p in concurrency["points"] if p["threads"] == 8 and p["latency_ms"] == 300),
            None,
        )
        from gateway.settings import Settings

        defaults = Settings()
        chosen = [
            p
            for p in concurrency["points"]
            if p["latency_ms"] == 300
            and (p["workers"], p["threads"]) == (defaults.workers, defaults.threads)
        ]
        for top in chosen:
            lines.append(
                f"| one gateway at the defaults ({top['workers']}x{top['threads']}), 300 ms image "
                f"host, {top['clients']} clients: req/s, p99 | >= 126 req/s (3 x 42), <= 1 s | "
                f"{top['requests_per_second']} req/s, p99 {top['p99_ms'] / 1000:.2f} s (gateway "
                f"{top['gateway_cpus']} CPU, model server {top['model_cpus']} CPU)"
                + (f"; 2x8 here: {base['requests_per_second']} req/s" if base else "")
                + " |"
            )
    lines += ["", "## Scenarios", "", "| scenario | requests | failed | p50 ms | p99 ms |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, scenario in s.items():
        lines.append(
            f"| {TITLES.get(name, name)} | {scenario['requests']} | {_failed(scenario)} | "
            f"{scenario['p50_ms']} | {scenario['p99_ms']} |"
        )
    lines += [
        "",
        "![timeline](scaling/timeline.png)",
        "",
        "Top to bottom: offered load (requests started per second), ready replicas per tier, "
        "p50/p99 of answered requests per 5 s (dotted: 1.5 s), failed requests (5xx or "
        "connection errors), predictions per second of each model replica (scraped). Grey "
        "bands: the scenarios, in order.",
        "",
        "![scale-out](scaling/scale_out.png)",
        "",
        "Share of predictions served by the model replica added to a loaded one-replica tier, "
        "per 5 s after it became ready (dotted: 40 %).",
        "",
    ]
    if concurrency:
        lines += [
            "## Gateway concurrency (I/O-bound)",
            "",
            f"`{concurrency['command']}` on {concurrency['date']} (load average "
            f"{concurrency['load_average']}): one gateway, the model server with batching, "
            "an image host with a fixed latency, wrk closed loop.",
            "",
            "| download ms | workers x threads | clients | req/s | p50 ms | p99 ms | errors | "
            "gateway CPUs | model CPUs | gateway RSS MiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for p in concurrency["points"]:
            lines.append(
                f"| {p['latency_ms']:.0f} | {p['workers']}x{p['threads']} | {p['clients']} | "
                f"{p['requests_per_second']} | {p['p50_ms']} | {p['p99_ms']} | {p['errors']} | "
                f"{p['gateway_cpus']} | {p['model_cpus']} | {p['gateway_rss_mib']} |"
            )
        note = (
            "Errors are wrk's non-2xx answers and socket errors (the gateway log is under "
            "build/scaling/concurrency/). Downloads reserve decode-budget memory as their bytes "
            "arrive (gateway/budget.py, fetch_image's `hold`), so slow image hosts do not fill "
            "the budget; a decode that waits too long for room would be a 503 `decode_busy`."
        )
        lines += [
            "",
            note,
            "",
            "![concurrency](scaling/concurrency.png)",
            "",
        ]
    if WARMUP.exists():
        lines += _warmup_section(json.loads(WARMUP.read_text()))
    if "ramp" in s:
        lines += ["## HPA decisions during the ramp", "", "| t s | tier | current | desired | "
                  "mean CPU % of request |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
        changes = [x for x in s["ramp"]["decisions"] if x["current"] != x["desired"]]
        for x in changes:
            lines.append(
                f"| {x['t']} | {x['tier']} | {x['current']} | {x['desired']} | {x['utilization']} |"
            )
        lines.append("")
    lines += [
        "## How to read the failures and limits",
        "",
        "- **kill -9 of a gateway**: the requests in flight on the killed process, and the new "
        "connections sent to it until haproxy's health check (2 x 1 s) marks it down, end as "
        "connection resets (an NLB, checking 2 x 10 s, does the same for longer; neither "
        "retries). **kill -9 of a model replica**: calls in "
        "flight fail with UNAVAILABLE and the gateway's gRPC retry policy sends them to "
        "another replica, so users see no error.",
        "- **Model drain**: the harness uses the program's preStop as declared. While it is "
        "shorter than max connection age + grace (+ the gateway's 10 s minimum between DNS "
        "resolutions), some gateways still hold a connection at SIGTERM; their calls in "
        "flight are retried on another replica (above), which is why the rolling replacement "
        "and scale-in still lose nothing. A preStop of DNS TTL + 1.1 x age + grace + 10 s "
        'lets the gateways leave before the signal (README "Scaling").',
        "- **Ramp**: every replica shares the same few CPUs here, so more replicas add no "
        "capacity once the machine is saturated; latency at the peak measures the machine, "
        "not the design. The CPU utilization the HPA emulator reads is each replica's "
        "process-tree CPU (what cAdvisor reads from a pod's cgroup) over its declared request.",
        "- **Scale-out share**: predictions per replica come from each model replica's "
        "`:tensorflow:serving:request_count`, scraped every second.",
        "",
    ]
    lines += ["## Events", "", "```"]
    lines += [f"{t:8.1f} s  {text}" for t, text in results["events"]]
    lines += ["```", ""]
    write_atomically(report, "\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.scaling.report [RESULTS] [REPORT]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    results = Path(args[0]) if args else REPO / "build" / "scaling" / "results.json"
    report = Path(args[1]) if len(args) > 1 else REPO / "docs" / "scaling.md"
    write_report(results, report)
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
