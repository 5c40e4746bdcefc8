"""`python -m benchmarks.capacity` (`make capacity`): capacity and cost -> docs/capacity.md.

    python -m benchmarks.capacity [--peak-factor 3] [--volumes 1e4,1e5,1e6,1e7]
                                  [--bench-doc docs/benchmarks.md] [--output docs/capacity.md]

Inputs: the measured CPU per request (docs/benchmarks.md), the sizes the infra program declares
(run under Pulumi's mocks, benchmarks/capacity/declared.py), the prices (benchmarks/prices.toml)
and the assumptions below (class Assumptions). Outputs: docs/capacity.md and docs/capacity.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, NoReturn

from benchmarks.capacity import arithmetic as a
from benchmarks.capacity.declared import DeclaredStack, declared_stack
from benchmarks.capacity.figures import Measured, mean_photo_bytes, read_measured
from benchmarks.config import DEFAULT_DATASET, REPO, BenchError
from benchmarks.report import write_atomically

PROG = "benchmarks.capacity"
PRICES = REPO / "benchmarks" / "prices.toml"
OUTPUT = REPO / "docs" / "capacity.md"
PLOT_NAME = "capacity.png"
MiB = 2.0**20


@dataclass(frozen=True)
class Assumptions:
    """Everything the report assumes rather than reads; each field's comment is printed."""

    peak_to_average: float = 3.0  # daily peak rate / daily average rate
    lambda_memory_mb: float = 1024.0  # TensorFlow + the model; the seed-style TF worker's RSS fits
    download_seconds: float = 0.100  # wall time to fetch one photo from a public image host
    handler_cpu_seconds: float = (
        0.001  # Lambda handler besides preprocessing and model (JSON, HTTP)
    )
    lambda_idle_seconds: float = 600.0  # an idle Lambda environment is reclaimed after this
    lambda_recycle_floor: float = 0.001  # cold starts that happen even under steady load
    gpu_rps_per_replica: float = 400.0  # one T4 TF Serving replica on this small model, batching
    daemonset_cpu: float = 0.125  # aws-node 25m + kube-proxy 100m on every node
    daemonset_memory: float = 0.0  # neither requests memory
    system_pods_cpu: float = 0.3  # CoreDNS 2 x 100m + metrics-server 100m, on the gateway pool
    system_pods_memory: float = 340 * MiB  # CoreDNS 2 x 70Mi + metrics-server 200Mi
    eviction_memory: float = 100 * MiB  # kubelet hard eviction threshold
    ecr_gb: float = 1.0  # both repositories: the tagged images kept, compressed
    request_bytes: float = 1500.0  # client <-> NLB per prediction, both directions
    response_bytes: float = 700.0  # the JSON answer, out to the internet


ASSUMPTION_NOTES = {
    "peak_to_average": "the daily peak rate over the daily average rate; the fleet is sized for "
    "the peak and (an upper bound) kept all month, as HPA scale-down waits 300 s and the "
    "cluster autoscaler removes nodes only after 10 minutes under 50 % requested",
    "lambda_memory_mb": "Lambda memory for TensorFlow + the model: the seed-style TensorFlow "
    "gateway measured {seed_rss:.0f} MiB per worker (B2), so 1024 MB leaves headroom; Lambda gives "
    "1024/1769 = 0.58 vCPU at this size",
    "download_seconds": "wall time Lambda waits for one photo from a realistic public image host "
    "(DNS, TCP and TLS handshakes over ~20 ms round trips, then ~{photo_kb:.0f} KB); on loopback "
    "the benchmarks see ~1 ms, which no real host gives",
    "handler_cpu_seconds": "Lambda handler CPU besides preprocessing and the model "
    "(event parsing, the HTTP client, JSON)",
    "lambda_idle_seconds": "an idle Lambda execution environment is reclaimed after about this "
    "long (AWS does not publish it; 5-15 minutes is commonly observed)",
    "lambda_recycle_floor": "share of invocations that are cold even under steady load "
    "(environments are recycled after some hours)",
    "gpu_rps_per_replica": "predictions per second one g4dn.xlarge TF Serving replica sustains "
    "(not measured: no GPU here); the HPA still scales on CPU, so a GPU stack needs a "
    "throughput metric to reach this",
    "daemonset_cpu": "CPU requested on every node by the EKS add-on DaemonSets "
    "(aws-node 25m, kube-proxy 100m, their defaults)",
    "daemonset_memory": "memory requested on every node by those DaemonSets",
    "system_pods_cpu": "CoreDNS (2 x 100m) and metrics-server (100m): they tolerate no taint, "
    "so they run on the gateway pool (the model pool is tainted)",
    "system_pods_memory": "CoreDNS (2 x 70Mi) and metrics-server (200Mi) memory requests",
    "eviction_memory": "the kubelet's hard eviction threshold, kept free on every node",
    "ecr_gb": "stored image bytes in both repositories (compressed layers; the lifecycle policy "
    "drops untagged layers after 7 days)",
    "request_bytes": "bytes through the NLB per prediction (the JSON request with its URL, the "
    "answer, TCP overhead)",
    "response_bytes": "bytes of the answer leaving AWS to the client",
}


@dataclass(frozen=True)
class Prices:
    """benchmarks/prices.toml, read."""

    table: dict[str, Any]

    def instance(self, name: str) -> dict[str, Any]:
        """One instance type's facts and prices."""
        try:
            found: dict[str, Any] = self.table["instance"][name]
        except KeyError:
            raise BenchError(
                f'{PRICES.name} has no [instance."{name}"]; the infra program declares it'
            ) from None
        return found

    def price(self, key: str) -> float:
        """One non-instance price's value."""
        return float(self.table["price"][key]["value"])


def load_prices(path: Path = PRICES) -> Prices:
    """The price table."""
    try:
        return Prices(tomllib.loads(path.read_text("utf-8")))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from None


@dataclass(frozen=True)
class Stack:
    """One costed variant: tiers, pools and fixed costs ready for the arithmetic."""

    label: str
    tiers: tuple[a.Tier, ...]
    pools: tuple[a.Pool, ...]
    fixed: a.Fixed

    def uncapped(self) -> Stack:
        """The same stack with HPA and node group maxima lifted (to cost any volume)."""
        return replace(
            self,
            tiers=tuple(replace(t, hpa_max=10**9) for t in self.tiers),
            pools=tuple(replace(p, max_nodes=10**9) for p in self.pools),
        )

    def month(self, traffic: a.Traffic) -> a.Estimate:
        """Its month at this traffic."""
        return a.kubernetes_month(self.tiers, self.pools, self.fixed, traffic)

    def with_cpu_per_request(self, tier: str, seconds: float) -> Stack:
        """The same stack with one tier's CPU per prediction changed (what-if figures)."""
        return replace(
            self,
            tiers=tuple(
                replace(t, cpu_per_request=seconds) if t.name == tier else t for t in self.tiers
            ),
        )


def build_stack(
    label: str,
    declared: DeclaredStack,
    prices: Prices,
    measured: Measured,
    assume: Assumptions,
    *,
    spot: bool,
) -> Stack:
    """Tiers and pools from the declarations, measured CPU and prices."""
    cpu_per_request = {
        "gateway": measured.gateway_cpu_seconds,
        "tf-serving": measured.model_cpu_seconds,
    }
    tiers = []
    for name, per_request in cpu_per_request.items():
        w = declared.workloads[name]
        if w.hpa_min is None or w.hpa_max is None or w.hpa_cpu_target is None or w.pool is None:
            raise BenchError(f"the Deployment {name} has no CPU HPA or node pool in the program")
        tiers.append(
            a.Tier(
                name=name,
                pool=w.pool,
                cpu_request=w.cpu_request,
                memory_request=w.memory_request,
                hpa_min=w.hpa_min,
                hpa_max=w.hpa_max,
                hpa_cpu_target=w.hpa_cpu_target,
                cpu_per_request=per_request,
                gpus=w.gpus,
                requests_per_second_per_gpu=assume.gpu_rps_per_replica if w.gpus else 0.0,
            )
        )
    pools = []
    for pool in declared.pools.values():
        facts = prices.instance(pool.instance_type)
        others = [
            w
            for w in declared.workloads.values()
            if w.pool == pool.name and w.name not in cpu_per_request
        ]
        extra_cpu = sum(w.cpu_request * (w.replicas or 1) for w in others)
        extra_memory = sum(w.memory_request * (w.replicas or 1) for w in others)
        if pool.name == "gateway":  # the pool without a taint: cluster add-ons land here
            extra_cpu += assume.system_pods_cpu
            extra_memory += assume.system_pods_memory
        burstable = "baseline_vcpu_fraction" in facts
        pools.append(
            a.Pool(
                name=pool.name,
                instance_type=pool.instance_type,
                vcpus=float(facts["vcpus"]),
                memory=float(facts["memory_gib"]) * 2.0**30,
                gpus=int(facts["gpus"]),
                min_nodes=pool.min_nodes,
                max_nodes=pool.max_nodes,
                hour_price=float(facts["spot_hour" if spot else "on_demand_hour"]),
                reserved_cpu=a.kube_reserved_cpu(float(facts["vcpus"])) + assume.daemonset_cpu,
                reserved_memory=a.kube_reserved_memory(int(facts["max_pods"]))
                + assume.eviction_memory
                + assume.daemonset_memory,
                extra_cpu=extra_cpu,
                extra_memory=extra_memory,
                disk_gb=pool.disk_gb,
                burst_baseline_vcpus=(
                    float(facts["vcpus"]) * float(facts["baseline_vcpu_fraction"])
                    if burstable
                    else None
                ),
                surplus_vcpu_hour=float(facts.get("surplus_vcpu_hour", 0.0)),
            )
        )
    fixed = a.Fixed(
        eks_cluster_hour=prices.price("eks_cluster_hour"),
        nat_gateways=declared.nat_gateways,
        nat_gateway_hour=prices.price("nat_gateway_hour"),
        nat_gateway_gb=prices.price("nat_gateway_gb"),
        load_balancers=declared.load_balancers,
        nlb_hour=prices.price("nlb_hour"),
        nlb_nlcu_hour=prices.price("nlb_nlcu_hour"),
        # The NAT gateway's Elastic IP and one NLB address per public subnet.
        public_ipv4_addresses=declared.nat_gateways
        + declared.load_balancers * declared.public_subnets,
        public_ipv4_hour=prices.price("public_ipv4_hour"),
        ecr_gb=assume.ecr_gb,
        ecr_gb_month=prices.price("ecr_gb_month"),
        ebs_gb_month=prices.price("ebs_gp3_gb_month"),
        egress_gb=prices.price("internet_egress_gb"),
    )
    return Stack(label, tuple(tiers), tuple(pools), fixed)


def lambda_function(
    prices: Prices, measured: Measured, assume: Assumptions, predictions_per_day: float
) -> a.Lambda:
    """The Lambda design: one image per invocation, TensorFlow in process."""
    # B5's in-process batch-1 rate kept this machine's 2 CPUs busy: CPU per image = 2 / rate.
    model_cpu = 2.0 / measured.in_process_batch1_per_second
    return a.Lambda(
        memory_mb=assume.lambda_memory_mb,
        download_seconds=assume.download_seconds,
        cpu_seconds=measured.preprocess_cpu_seconds + model_cpu + assume.handler_cpu_seconds,
        gb_second=prices.price("lambda_gb_second"),
        requests_million=prices.price("lambda_requests_million"),
        cold_start_fraction=a.cold_start_fraction(
            predictions_per_day, assume.lambda_idle_seconds, assume.lambda_recycle_floor
        ),
        cold_start_seconds=measured.seed_cold_start_seconds,
    )


def traffic_at(volume: float, assume: Assumptions, photo_bytes: float) -> a.Traffic:
    """The traffic of one daily volume."""
    return a.Traffic(
        predictions_per_day=volume,
        peak_to_average=assume.peak_to_average,
        image_bytes=photo_bytes,
        request_bytes=assume.request_bytes,
        response_bytes=assume.response_bytes,
    )


def _usd(value: float) -> str:
    if value >= 100:
        return f"${value:,.0f}"
    return f"${value:,.2f}" if value >= 0.01 else f"${value:.4f}"


def _volume(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def max_peak_rps(stack: Stack) -> tuple[float, str]:
    """Highest peak rate the declared maxima serve at the HPA targets, and the limiting tier."""
    best: list[tuple[float, str]] = []
    for tier in stack.tiers:
        pool = next(p for p in stack.pools if p.name == tier.pool)
        replicas = tier.hpa_max
        if tier.gpus:
            replicas = min(replicas, pool.max_nodes * pool.gpus // tier.gpus)
            best.append((replicas * tier.requests_per_second_per_gpu, tier.name))
        else:
            per_pod = tier.hpa_cpu_target * tier.cpu_request / tier.cpu_per_request
            best.append((replicas * per_pod, tier.name))
    return min(best)


def plot(
    path: Path,
    volumes: Sequence[float],
    curves: dict[str, Callable[[float], float]],
    marks: dict[str, float],
) -> None:
    """Cost per day against predictions per day, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for label, cost in curves.items():
        axes.plot(volumes, [cost(v) for v in volumes], label=label, linewidth=2)
    for label, volume in marks.items():
        axes.axvline(volume, color="grey", linestyle=":", linewidth=1)
        axes.annotate(
            label,
            (volume, 0.98),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="dimgrey",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("predictions per day")
    axes.set_ylabel("USD per day (month / 30.4)")
    axes.set_title("Serving cost: EKS stack (as declared in infra/) against AWS Lambda, eu-west-1")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)


def build_document(
    *,
    measured: Measured,
    prices: Prices,
    assume: Assumptions,
    photo_bytes: float,
    photo_count: int,
    stacks: dict[str, Stack],
    volumes: Sequence[float],
    output: Path,
) -> str:
    """docs/capacity.md (and its plot next to it)."""
    default, spot, gpu = stacks["on-demand"], stacks["spot"], stacks["gpu"]
    per_day = a.DAYS_PER_MONTH

    def k8s(stack: Stack) -> Callable[[float], float]:
        uncapped = stack.uncapped()
        return lambda v: uncapped.month(traffic_at(v, assume, photo_bytes)).monthly / per_day

    def marginal(stack: Stack) -> float:
        # wide enough a span that a tier's whole nodes average out into a rate
        low, high = 1e7, 1.1e8
        return (k8s(stack)(high) - k8s(stack)(low)) / (high - low) * 1e6

    gateway_cpu = measured.gateway_cpu_seconds
    measured_marginal = marginal(default)
    gateway_share = 1 - marginal(default.with_cpu_per_request("gateway", 0.0)) / measured_marginal
    nat_share = photo_bytes / a.GB * 1e6 * default.fixed.nat_gateway_gb / measured_marginal

    def serverless(v: float) -> float:
        function = lambda_function(prices, measured, assume, v)
        return (
            a.lambda_month(function, default.fixed, traffic_at(v, assume, photo_bytes)).monthly
            / per_day
        )

    lines = [
        "# Capacity and cost",
        "",
        f"Written by `make capacity` (`python -m {PROG}`) on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; every run rewrites this file and "
        f"[{PLOT_NAME}]({PLOT_NAME}). Region {prices.table['region']} (Pulumi.dev.yaml).",
        "",
        "How it is computed: replicas of a tier = ceil(peak predictions/s x measured CPU per "
        "prediction / (HPA CPU target x the pod's CPU request)), within the HPA bounds (the HPA "
        "converges there); nodes of a pool = ceil(requests of its pods and of the system pods it "
        "hosts / allocatable per node), within the node group bounds (the cluster autoscaler adds "
        "nodes for Pending pods); cost = nodes x price x 730 h + the fixed items. The arithmetic "
        "is `benchmarks/capacity/arithmetic.py`, checked on a hand-computed case by "
        "`tests/benchmarks/test_capacity.py`.",
        "",
        "## Inputs",
        "",
        "### Measured (this machine, from docs/benchmarks.md)",
        "",
        f"Read from docs/benchmarks.md ({measured.source}); re-run `make bench` then "
        "`make capacity` to refresh.",
        "",
    ]
    lines += _table(
        ["figure", "value", "from"],
        [
            [
                "gateway CPU per prediction",
                f"{measured.gateway_cpu_seconds * 1000:.2f} ms",
                f"B3, ours, {measured.gateway_clients} clients",
            ],
            [
                "model server CPU per prediction",
                f"{measured.model_cpu_seconds * 1000:.2f} ms",
                "B4, batching on: the development server (Python + TF), not TF Serving's "
                "C++ server, which should need less",
            ],
            [
                "preprocessing CPU per image",
                f"{measured.preprocess_cpu_seconds * 1000:.2f} ms",
                "B1, ours, demo model size",
            ],
            [
                "model CPU per image in process, batch 1",
                f"{2000 / measured.in_process_batch1_per_second:.2f} ms",
                f"B5: {measured.in_process_batch1_per_second:g} img/s on 2 busy CPUs",
            ],
            [
                "TensorFlow worker RSS",
                f"{measured.seed_rss_bytes / MiB:.0f} MiB",
                "B2, seed-style gateway (TensorFlow in process, as a Lambda would be)",
            ],
            [
                "TensorFlow cold start",
                f"{measured.seed_cold_start_seconds:.2f} s",
                "B2, seed-style gateway: billed as Lambda INIT duration",
            ],
            [
                "mean photo size",
                f"{photo_bytes / 1000:.1f} KB",
                f"{photo_count} photos of clothing-dataset-small",
            ],
        ],
    )
    lines += ["", "### Declared (the infra program under Pulumi's mocks)", ""]
    lines += [
        "Read by running `infra/__main__.py` under Pulumi's mocks exactly as tests/infra does "
        "(`clothing_infra.declared.declare`) and taking the rendered Deployment, "
        "HorizontalPodAutoscaler and Service manifests and the managed node groups "
        "(`benchmarks/capacity/declared.py`), so the figures follow the program wherever it "
        "declares them.",
        "",
    ]
    rows = []
    for stack in (default, gpu):
        for tier in stack.tiers:
            rows.append(
                [
                    f"{stack.label}: {tier.name}",
                    f"{tier.cpu_request:g} CPU",
                    f"{tier.memory_request / MiB:.0f} Mi",
                    f"{tier.gpus}",
                    f"{tier.hpa_min}-{tier.hpa_max}",
                    f"{tier.hpa_cpu_target * 100:.0f} % of request",
                    f"{tier.pool}",
                ]
            )
    lines += _table(
        [
            "Deployment",
            "CPU request",
            "memory request",
            "GPUs",
            "HPA replicas",
            "HPA target",
            "pool",
        ],
        rows,
    )
    lines.append("")
    rows = []
    for stack in (default, gpu):
        for pool in stack.pools:
            rows.append(
                [
                    f"{stack.label}: {pool.name}",
                    pool.instance_type,
                    f"{pool.min_nodes}-{pool.max_nodes}",
                    f"{pool.vcpus - pool.reserved_cpu:.3f} CPU",
                    f"{(pool.memory - pool.reserved_memory) / MiB:.0f} Mi",
                    f"{pool.extra_cpu:g} CPU",
                    f"{pool.disk_gb:g} GB",
                ]
            )
    lines += _table(
        [
            "pool",
            "instance",
            "nodes",
            "allocatable CPU (for pods)",
            "allocatable memory",
            "system pods there",
            "root volume",
        ],
        rows,
    )
    lines += [
        "",
        f"Network: {default.fixed.nat_gateways} NAT gateway(s), {default.fixed.load_balancers} "
        f"NLB(s), {default.fixed.public_ipv4_addresses} public IPv4 addresses (NAT EIP + one NLB "
        "address per public subnet). Allocatable = vCPUs - kube-reserved (EKS bootstrap formula: "
        "6 % of core 1, 1 % of core 2, 0.5 % of cores 3-4; memory 11 MiB x max pods + 255 MiB, "
        "plus the eviction threshold) - DaemonSet requests.",
        "",
        "### Prices",
        "",
        f"From `benchmarks/prices.toml` (written {prices.table['written']}): each with its "
        "source and the date the source shows; *assumption* marks figures not found for the "
        "region in the sources available offline.",
        "",
    ]
    rows = []
    for name, facts in prices.table["instance"].items():
        for kind in ("on_demand", "spot"):
            rows.append(
                [
                    f"{name} {kind.replace('_', '-')}",
                    f"${facts[kind + '_hour']:g}/h",
                    facts[kind + "_source"],
                    facts[kind + "_date"],
                    "assumption" if facts.get(kind + "_assumption") else "",
                ]
            )
        if "surplus_vcpu_hour" in facts:
            rows.append(
                [
                    f"{name} surplus CPU credits",
                    f"${facts['surplus_vcpu_hour']:g}/vCPU-h",
                    facts["surplus_source"],
                    "",
                    "assumption" if facts.get("surplus_assumption") else "",
                ]
            )
    for name, entry in prices.table["price"].items():
        rows.append(
            [
                name,
                f"${entry['value']:g} ({entry['unit']})",
                entry["source"],
                entry["date"],
                "assumption" if entry.get("assumption") else "",
            ]
        )
    lines += _table(["price", "value", "source", "date", ""], rows)
    lines += ["", "### Assumptions", ""]
    context = {"seed_rss": measured.seed_rss_bytes / MiB, "photo_kb": photo_bytes / 1000}
    for item in fields(Assumptions):
        value = getattr(assume, item.name)
        shown = (
            f"{value / MiB:g} Mi" if item.name.endswith("memory") and value > 1e5 else f"{value:g}"
        )
        lines.append(f"- `{item.name}` = {shown}: {ASSUMPTION_NOTES[item.name].format(**context)}")
    lines += [
        "- Lambda: x86, outside any VPC (so no NAT), one image per invocation, the handler is "
        "single-threaded so at most 1 vCPU helps; duration = download wait + CPU work / vCPU "
        "share (memory / 1769 MB); cold starts billed at the measured TensorFlow start; no free "
        "tier, no API Gateway (a function URL costs nothing extra; API Gateway would add its "
        "per-request price).",
        "- Kubernetes: one new client connection per prediction (NLB capacity units); the "
        "gateway downloads every photo through the NAT gateway (the pods are in private "
        "subnets); free tiers and savings plans ignored; CloudWatch logs not counted.",
        "",
    ]
    # --- scenarios
    lines += [
        "## Scenarios",
        "",
        f"Peak-to-average factor {assume.peak_to_average:g}. "
        "Per month (730 h); replicas and nodes at the daily peak.",
        "",
    ]
    rows = []
    for volume in volumes:
        traffic = traffic_at(volume, assume, photo_bytes)
        on_demand, on_spot, on_gpu = (s.month(traffic) for s in (default, spot, gpu))
        function = lambda_function(prices, measured, assume, volume)
        serverless_month = a.lambda_month(function, default.fixed, traffic)
        caps = [t.name for t in on_demand.tiers if t.capped]
        caps += [f"{p.name} pool" for p in on_demand.pools if p.capped]
        rows.append(
            [
                _volume(volume),
                f"{traffic.peak_rps:.1f}",
                " / ".join(str(t.replicas) for t in on_demand.tiers),
                " / ".join(str(p.nodes) for p in on_demand.pools),
                " / ".join(str(p.nodes) for p in on_gpu.pools),
                f"{_usd(on_demand.monthly)} ({_usd(a.per_million(on_demand, traffic))})",
                f"{_usd(on_spot.monthly)} ({_usd(a.per_million(on_spot, traffic))})",
                f"{_usd(on_gpu.monthly)} ({_usd(a.per_million(on_gpu, traffic))})",
                f"{_usd(serverless_month.monthly)} "
                f"({_usd(a.per_million(serverless_month, traffic))})",
                ("capped: " + ", ".join(caps)) if caps else "",
            ]
        )
    lines += _table(
        [
            "predictions/day",
            "peak/s",
            "replicas gateway / model",
            "nodes gateway / model",
            "GPU variant nodes",
            "on-demand / month (per million)",
            "spot",
            "GPU variant",
            "Lambda",
            "declared maxima",
        ],
        rows,
    )
    lines.append("")
    for volume in (volumes[len(volumes) // 2],):
        traffic = traffic_at(volume, assume, photo_bytes)
        estimate = default.month(traffic)
        lines += [f"Itemised, on-demand, {_volume(volume)} predictions a day:", ""]
        lines += _table(
            ["item", "USD / month"],
            [[k, _usd(v)] for k, v in estimate.items.items()]
            + [["**total**", f"**{_usd(estimate.monthly)}**"]],
        )
        function = lambda_function(prices, measured, assume, volume)
        lines += [
            "",
            f"Lambda at the same volume: {a.lambda_seconds(function) * 1000:.0f} ms billed per "
            f"warm invocation ({assume.download_seconds * 1000:.0f} ms download + "
            f"{function.cpu_seconds * 1000:.1f} ms CPU at "
            f"{min(assume.lambda_memory_mb / a.LAMBDA_MB_PER_VCPU, 1):.2f} vCPU), cold "
            f"{function.cold_start_fraction * 100:.2f} % of invocations at "
            f"{function.cold_start_seconds:.1f} s.",
            "",
        ]
    # --- floor, limits, break-even
    idle = traffic_at(0.0, assume, photo_bytes)
    floors = {label: s.month(idle) for label, s in stacks.items()}
    grid = [10 ** (3 + i / 20) for i in range(0, 5 * 20 + 1)]
    even = {label: a.break_even(k8s(s), serverless, 1e3, 1e9) for label, s in stacks.items()}
    limit, limiting = max_peak_rps(default)
    gpu_limit, gpu_limiting = max_peak_rps(gpu)
    gpu_model = next(t for t in gpu.tiers if t.gpus)
    gpu_pool = next(p for p in gpu.pools if p.name == gpu_model.pool)
    lines += [
        "## The floor, the limits and the break-even",
        "",
        "**Idle floor** (no traffic, HPA and node group minimums): "
        + "; ".join(
            f"{label} {_usd(f.monthly)}/month ({_usd(f.monthly / per_day)}/day)"
            for label, f in floors.items()
        )
        + ". "
        f"Of the on-demand floor, EKS is {_usd(floors['on-demand'].items['EKS control plane'])}, "
        f"the NAT gateway {_usd(floors['on-demand'].items['NAT gateway hours'])}, the NLB "
        f"{_usd(floors['on-demand'].items['NLB hours'])}; Lambda's floor is ECR storage only "
        f"({_usd(default.fixed.ecr_gb * default.fixed.ecr_gb_month)}).",
        "",
        "**What the minimums imply**: "
        + "; ".join(
            f"{t.name} HPA minimum {t.hpa_min} x {t.cpu_request:g} CPU"
            + (f" x {t.gpus} GPU" if t.gpus else "")
            for t in default.tiers
        )
        + f"; in the GPU variant {gpu_model.name} {gpu_model.hpa_min} x {gpu_model.gpus} GPU"
        + ". In the default stack the minimum replicas (and the system pods) fit on "
        + ", ".join(
            f"{a.nodes_needed(replace(p, min_nodes=0), [(t, t.hpa_min) for t in default.tiers if t.pool == p.name]).nodes} {p.name} node(s)"  # noqa: E501
            for p in default.pools
        )
        + "; the node group minimums keep "
        + ", ".join(f"{p.min_nodes} {p.name}" for p in default.pools)
        + " running, so they set the floor. In the GPU variant each model replica "
        f"needs a whole GPU and a {gpu_pool.instance_type} has {gpu_pool.gpus}, so the HPA "
        f"minimum of {gpu_model.hpa_min} forces {gpu_model.hpa_min} GPU nodes (the node group "
        f"minimum of {gpu_pool.min_nodes} never applies), and the GPU floor is "
        f"{_usd(floors['gpu'].monthly)}/month. The GPU node group maximum of "
        f"{gpu_pool.max_nodes} also caps the model tier at {gpu_pool.max_nodes * gpu_pool.gpus} "
        f"replicas although the HPA allows {gpu_model.hpa_max}.",
        "",
        f"**Declared limit**: at the HPA targets the declared maxima serve a peak of "
        f"{limit:.0f} predictions/s (the {limiting} tier limits), i.e. "
        f"{_volume(limit / assume.peak_to_average * a.SECONDS_PER_DAY)} predictions a day at a "
        f"peak factor of {assume.peak_to_average:g}; the GPU variant {gpu_limit:.0f}/s "
        f"({gpu_limiting}). Above that, the costs in the plot assume the maxima are raised.",
        "",
        "**Break-even with Lambda** (smallest daily volume from which the stack is cheaper): "
        + "; ".join(
            f"{label} {_volume(v) + ' predictions/day' if v else 'never up to 1000M/day'}"
            for label, v in even.items()
        )
        + ".",
        "",
        "**Marginal cost** per extra million predictions (between 10M and 20M a day, maxima "
        "lifted): "
        + "; ".join(
            f"{label} {_usd((k8s(s)(2e7) - k8s(s)(1e7)) / 1e7 * 1e6)}"
            for label, s in stacks.items()
        )
        + f"; Lambda {_usd((serverless(2e7) - serverless(1e7)) / 1e7 * 1e6)}. Of the stack's, "
        f"{_usd(photo_bytes / a.GB * 1e6 * default.fixed.nat_gateway_gb)} is the NAT gateway's "
        "per-GB charge on the photo downloads (the gateway pods sit in private subnets): "
        "a gateway pool in public subnets, or an egress path without NAT, would remove it.",
        "",
        "**What the gateway's CPU is worth**: per extra million predictions (between 10M and "
        "110M a day, so that whole nodes average out), the on-demand stack costs "
        + "; ".join(
            f"{_usd(marginal(default.with_cpu_per_request('gateway', seconds)))} with {what}"
            for what, seconds in (
                (f"the measured {measured.gateway_cpu_seconds * 1000:.2f} ms", gateway_cpu),
                (
                    f"0.6x the seed-style gateway's {measured.seed_gateway_cpu_seconds * 1000:.2f}"
                    " ms (issue 14's target)",
                    0.6 * measured.seed_gateway_cpu_seconds,
                ),
                ("a gateway using no CPU at all", 0.0),
            )
        )
        + f". So the gateway's CPU is {gateway_share:.0%} of the marginal cost of a "
        f"prediction, the NAT charge on the photo bytes {nat_share:.0%}.",
        "",
        f"![Cost per day against predictions per day]({PLOT_NAME})",
        "",
    ]
    # Sensitivity of the break-even to the two assumptions that move it most.
    rows = []
    for download in (0.05, 0.1, 0.2):
        for memory in (1024.0, 1769.0):
            varied = replace(assume, download_seconds=download, lambda_memory_mb=memory)

            def varied_lambda(v: float, varied: Assumptions = varied) -> float:
                function = lambda_function(prices, measured, varied, v)
                return (
                    a.lambda_month(
                        function, default.fixed, traffic_at(v, varied, photo_bytes)
                    ).monthly
                    / per_day
                )

            found = a.break_even(k8s(default), varied_lambda, 1e3, 1e9)
            rows.append(
                [
                    f"{download * 1000:.0f} ms",
                    f"{memory:.0f} MB",
                    _volume(found) if found else "never",
                ]
            )
    lines += ["Break-even of the on-demand stack as the Lambda assumptions move:", ""]
    lines += _table(["download wait", "Lambda memory", "break-even predictions/day"], rows)
    lines.append("")
    declared_daily = limit / assume.peak_to_average * a.SECONDS_PER_DAY
    plot(
        output.parent / PLOT_NAME,
        grid,
        {
            "EKS on-demand (c6i model pool)": k8s(default),
            "EKS spot": k8s(spot),
            "EKS GPU variant (g4dn model pool)": k8s(gpu),
            "Lambda (1 image per invocation)": serverless,
        },
        {
            f"declared maxima ({_volume(declared_daily)}/day)": declared_daily,
            **{f"break-even {label}": v for label, v in even.items() if v and label == "on-demand"},
        },
    )
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Read the inputs, compute, write docs/capacity.md and its plot."""
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--peak-factor", type=float, default=Assumptions.peak_to_average)
    parser.add_argument(
        "--volumes", default="1e4,1e5,1e6,1e7", help="daily prediction volumes, comma-separated"
    )
    parser.add_argument("--bench-doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    try:
        volumes = [float(v) for v in args.volumes.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--volumes takes numbers such as 1e5,1e6, got {args.volumes!r}")
    if not volumes or any(v <= 0 for v in volumes) or args.peak_factor < 1:
        parser.error("--volumes must be positive and --peak-factor at least 1")
    assume = Assumptions(peak_to_average=args.peak_factor)
    try:
        prices = load_prices()
        measured = read_measured(args.bench_doc)
        photo_bytes, photo_count = mean_photo_bytes(args.dataset)
        default = declared_stack()
        gpu = declared_stack(gpu="true")
        stacks = {
            "on-demand": build_stack("on-demand", default, prices, measured, assume, spot=False),
            "spot": build_stack("spot", default, prices, measured, assume, spot=True),
            "gpu": build_stack("GPU variant", gpu, prices, measured, assume, spot=False),
        }
        document = build_document(
            measured=measured,
            prices=prices,
            assume=assume,
            photo_bytes=photo_bytes,
            photo_count=photo_count,
            stacks=stacks,
            volumes=sorted(volumes),
            output=args.output,
        )
    except BenchError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    write_atomically(args.output, document + "\n")
    print(f"{PROG}: wrote {args.output} and {args.output.parent / PLOT_NAME}")
    return 0
