"""The capacity and cost arithmetic: pure functions of declared sizes, measured CPU and prices.

Nothing here reads files or runs anything, so tests/benchmarks/test_capacity.py checks it on a
case small enough to compute by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

HOURS_PER_MONTH = 730.0  # AWS's own convention for monthly figures
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
SECONDS_PER_DAY = 86_400.0
LAMBDA_MB_PER_VCPU = 1769.0  # Lambda: "at 1,769 MB, a function has the equivalent of one vCPU"
NLCU_NEW_FLOWS_PER_SECOND = 800.0  # one NLCU: 800 new TCP flows/s, or 1 GB processed an hour
NLCU_GB_PER_HOUR = 1.0
GB = 1e9
_EPSILON = 1e-9


@dataclass(frozen=True)
class Tier:
    """A Deployment scaled by a CPU HorizontalPodAutoscaler, with its measured cost per request."""

    name: str
    pool: str
    cpu_request: float  # cores per pod
    memory_request: float  # bytes per pod
    hpa_min: int
    hpa_max: int
    hpa_cpu_target: float  # averageUtilization / 100, of the CPU request
    cpu_per_request: float  # CPU seconds per prediction (measured)
    gpus: int = 0  # GPUs per pod
    requests_per_second_per_gpu: float = 0.0  # GPU pods: throughput of one pod (assumed)


@dataclass(frozen=True)
class Pool:
    """A managed node group: its instance type's size and price, and the autoscaler's bounds."""

    name: str
    instance_type: str
    vcpus: float
    memory: float  # bytes
    gpus: int
    min_nodes: int
    max_nodes: int
    hour_price: float  # USD per node-hour for the capacity type being costed
    reserved_cpu: float  # kube-reserved + DaemonSets, cores per node
    reserved_memory: float  # kube-reserved + eviction + DaemonSets, bytes per node
    extra_cpu: float = 0.0  # requests of other pods pinned to this pool (whole pool)
    extra_memory: float = 0.0
    disk_gb: float = 0.0  # EBS root volume per node
    burst_baseline_vcpus: float | None = None  # T3: vCPUs sustained without surplus credits
    surplus_vcpu_hour: float = 0.0


@dataclass(frozen=True)
class Fixed:
    """Everything a Kubernetes stack pays for besides nodes, as hourly counts and unit prices."""

    eks_cluster_hour: float
    nat_gateways: int
    nat_gateway_hour: float
    nat_gateway_gb: float
    load_balancers: int
    nlb_hour: float
    nlb_nlcu_hour: float
    public_ipv4_addresses: int
    public_ipv4_hour: float
    ecr_gb: float
    ecr_gb_month: float
    ebs_gb_month: float
    egress_gb: float  # USD per GB out to the internet


@dataclass(frozen=True)
class Traffic:
    """A daily volume, its peak-to-average factor and the bytes each prediction moves."""

    predictions_per_day: float
    peak_to_average: float
    image_bytes: float  # downloaded by the gateway from the image host (through NAT)
    request_bytes: float  # client <-> NLB, request plus response
    response_bytes: float  # out to the internet

    @property
    def average_rps(self) -> float:
        """Predictions per second averaged over the day."""
        return self.predictions_per_day / SECONDS_PER_DAY

    @property
    def peak_rps(self) -> float:
        """Predictions per second at the daily peak."""
        return self.average_rps * self.peak_to_average


@dataclass(frozen=True)
class Lambda:
    """A Lambda function classifying one image per invocation."""

    memory_mb: float
    download_seconds: float  # wall time waiting for the image host
    cpu_seconds: float  # preprocessing + model + runtime, at one full vCPU
    gb_second: float
    requests_million: float
    cold_start_fraction: float = 0.0
    cold_start_seconds: float = 0.0  # billed INIT duration per cold start


@dataclass(frozen=True)
class TierSize:
    """Replicas a tier needs at the peak, and whether the HPA maximum caps it."""

    name: str
    wanted: int
    replicas: int

    @property
    def capped(self) -> bool:
        """The HPA maximum is below what the load needs: the tier saturates."""
        return self.wanted > self.replicas


@dataclass(frozen=True)
class PoolSize:
    """Nodes a pool needs for its pods, and whether the autoscaler's maximum caps it."""

    name: str
    wanted: int
    nodes: int

    @property
    def capped(self) -> bool:
        """The node group maximum is below what the pods request: pods stay Pending."""
        return self.wanted > self.nodes


@dataclass(frozen=True)
class Estimate:
    """A month of one stack at one volume: sizes and itemised cost."""

    tiers: tuple[TierSize, ...]
    pools: tuple[PoolSize, ...]
    items: Mapping[str, float] = field(default_factory=dict)  # USD per month

    @property
    def monthly(self) -> float:
        """USD per month, all items."""
        return sum(self.items.values())


def replicas_needed(tier: Tier, peak_rps: float) -> TierSize:
    """Replicas that keep the tier at its HPA CPU target at the peak, within the HPA bounds.

    The HPA converges to ceil(total CPU used / (target x request)); GPU pods are sized on their
    own throughput instead, since their CPU is not what limits them."""
    if tier.gpus:
        raw = peak_rps / tier.requests_per_second_per_gpu
    else:
        raw = peak_rps * tier.cpu_per_request / (tier.hpa_cpu_target * tier.cpu_request)
    wanted = max(tier.hpa_min, math.ceil(raw - _EPSILON))
    return TierSize(tier.name, wanted, min(wanted, tier.hpa_max))


def nodes_needed(pool: Pool, pods: Sequence[tuple[Tier, int]]) -> PoolSize:
    """Nodes whose allocatable CPU, memory and GPUs hold the pods' requests (fluid packing)."""
    cpu = pool.extra_cpu + sum(t.cpu_request * n for t, n in pods)
    memory = pool.extra_memory + sum(t.memory_request * n for t, n in pods)
    gpus = sum(t.gpus * n for t, n in pods)
    by_cpu = cpu / (pool.vcpus - pool.reserved_cpu)
    by_memory = memory / (pool.memory - pool.reserved_memory)
    by_gpu = gpus / pool.gpus if pool.gpus else 0.0
    wanted = max(pool.min_nodes, math.ceil(max(by_cpu, by_memory, by_gpu) - _EPSILON))
    return PoolSize(pool.name, wanted, min(wanted, pool.max_nodes))


def kubernetes_month(
    tiers: Sequence[Tier], pools: Sequence[Pool], fixed: Fixed, traffic: Traffic
) -> Estimate:
    """Cost of a month with the fleet sized for the daily peak all month (an upper bound).

    CPU used on burstable nodes is the daily average; NLB capacity units assume one new
    connection per prediction."""
    sizes = [replicas_needed(t, traffic.peak_rps) for t in tiers]
    by_name = {t.name: t for t in tiers}
    items: dict[str, float] = {"EKS control plane": fixed.eks_cluster_hour * HOURS_PER_MONTH}
    pool_sizes = []
    for pool in pools:
        pods = [(by_name[s.name], s.replicas) for s in sizes if by_name[s.name].pool == pool.name]
        size = nodes_needed(pool, pods)
        pool_sizes.append(size)
        items[f"{pool.name} nodes ({size.nodes} x {pool.instance_type})"] = (
            size.nodes * pool.hour_price * HOURS_PER_MONTH
        )
        items[f"{pool.name} EBS root volumes"] = size.nodes * pool.disk_gb * fixed.ebs_gb_month
        if pool.burst_baseline_vcpus is not None:
            used = traffic.average_rps * sum(t.cpu_per_request for t, _ in pods) + pool.extra_cpu
            surplus = max(0.0, used - size.nodes * pool.burst_baseline_vcpus)
            items[f"{pool.name} T3 surplus CPU credits"] = (
                surplus * pool.surplus_vcpu_hour * HOURS_PER_MONTH
            )
    monthly_predictions = traffic.predictions_per_day * DAYS_PER_MONTH
    nat_gb = monthly_predictions * traffic.image_bytes / GB
    items["NAT gateway hours"] = fixed.nat_gateways * fixed.nat_gateway_hour * HOURS_PER_MONTH
    items["NAT gateway data (image downloads)"] = nat_gb * fixed.nat_gateway_gb
    nlcu = max(
        traffic.average_rps / NLCU_NEW_FLOWS_PER_SECOND,
        traffic.average_rps * 3600 * traffic.request_bytes / GB / NLCU_GB_PER_HOUR,
    )
    items["NLB hours"] = fixed.load_balancers * fixed.nlb_hour * HOURS_PER_MONTH
    items["NLB capacity units"] = nlcu * fixed.nlb_nlcu_hour * HOURS_PER_MONTH
    items["public IPv4 addresses"] = (
        fixed.public_ipv4_addresses * fixed.public_ipv4_hour * HOURS_PER_MONTH
    )
    items["ECR storage"] = fixed.ecr_gb * fixed.ecr_gb_month
    items["internet egress (answers)"] = (
        monthly_predictions * traffic.response_bytes / GB * fixed.egress_gb
    )
    return Estimate(tuple(sizes), tuple(pool_sizes), items)


def lambda_seconds(function: Lambda) -> float:
    """Billed time of one warm invocation: the download, then the CPU work at its vCPU share."""
    vcpus = min(function.memory_mb / LAMBDA_MB_PER_VCPU, 6.0)
    # A single-threaded handler cannot use more than one vCPU.
    return function.download_seconds + function.cpu_seconds / min(vcpus, 1.0)


def lambda_month(function: Lambda, fixed: Fixed, traffic: Traffic) -> Estimate:
    """Cost of a month of Lambda invocations (no free tier, outside a VPC so no NAT)."""
    invocations = traffic.predictions_per_day * DAYS_PER_MONTH
    seconds = lambda_seconds(function) + function.cold_start_fraction * function.cold_start_seconds
    gb_seconds = invocations * seconds * function.memory_mb / 1024
    items = {
        "Lambda requests": invocations / 1e6 * function.requests_million,
        "Lambda duration": gb_seconds * function.gb_second,
        "ECR storage": fixed.ecr_gb * fixed.ecr_gb_month,
        "internet egress (answers)": invocations * traffic.response_bytes / GB * fixed.egress_gb,
    }
    return Estimate((), (), items)


def per_million(estimate: Estimate, traffic: Traffic) -> float:
    """USD per million predictions at this volume."""
    monthly_predictions = traffic.predictions_per_day * DAYS_PER_MONTH
    return estimate.monthly / monthly_predictions * 1e6 if monthly_predictions else math.inf


def break_even(
    kubernetes: Callable[[float], float],
    serverless: Callable[[float], float],
    low: float,
    high: float,
) -> float | None:
    """Smallest daily volume in [low, high] (log grid, 1 % steps) where Kubernetes is cheaper."""
    volume = low
    while volume <= high:
        if kubernetes(volume) <= serverless(volume):
            return volume
        volume *= 1.01
    return None


def cold_start_fraction(predictions_per_day: float, idle_seconds: float, floor: float) -> float:
    """Share of invocations that find no warm environment, for Poisson arrivals.

    An environment is reclaimed after `idle_seconds` without work, so an invocation is cold when
    the gap before it is longer (probability exp(-rate x idle)); `floor` stands for the
    environments Lambda recycles anyway."""
    rate = predictions_per_day / SECONDS_PER_DAY
    return min(1.0, math.exp(-rate * idle_seconds) + floor)


def kube_reserved_cpu(vcpus: float) -> float:
    """Cores the EKS node bootstrap keeps for the kubelet: 6 % of core 1, 1 % of core 2,
    0.5 % of cores 3-4, 0.25 % of the rest."""
    shares = [(1, 0.06), (1, 0.01), (2, 0.005), (math.inf, 0.0025)]
    reserved, left = 0.0, vcpus
    for cores, share in shares:
        used = min(left, cores)
        reserved += used * share
        left -= used
    return reserved


def kube_reserved_memory(max_pods: int) -> float:
    """Bytes the EKS node bootstrap keeps for the kubelet: 11 MiB per pod + 255 MiB."""
    return (11 * max_pods + 255) * 2.0**20
