"""The capacity report's arithmetic on a case small enough to compute by hand, and its inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.capacity import arithmetic as a
from benchmarks.capacity.declared import declared_stack, quantity
from benchmarks.capacity.figures import read_measured
from benchmarks.capacity.report import Stack
from benchmarks.config import REPO, BenchError

GiB = 2.0**30

# 864,000 predictions a day = 10/s on average, 20/s at a peak factor of 2.
TRAFFIC = a.Traffic(
    predictions_per_day=864_000,
    peak_to_average=2.0,
    image_bytes=100_000,
    request_bytes=1_000,
    response_bytes=0,
)
TIER = a.Tier(
    name="gateway",
    pool="gateway",
    cpu_request=0.5,
    memory_request=1 * GiB,
    hpa_min=1,
    hpa_max=10,
    hpa_cpu_target=0.5,
    cpu_per_request=0.05,
)
POOL = a.Pool(
    name="gateway",
    instance_type="small",
    vcpus=2,
    memory=8 * GiB,
    gpus=0,
    min_nodes=1,
    max_nodes=5,
    hour_price=0.1,
    reserved_cpu=0.5,
    reserved_memory=2 * GiB,
    extra_cpu=0.25,
)
FIXED = a.Fixed(
    eks_cluster_hour=0.1,
    nat_gateways=1,
    nat_gateway_hour=0.05,
    nat_gateway_gb=0.05,
    load_balancers=1,
    nlb_hour=0.02,
    nlb_nlcu_hour=0.01,
    public_ipv4_addresses=0,
    public_ipv4_hour=0.005,
    ecr_gb=0,
    ecr_gb_month=0.1,
    ebs_gb_month=0.08,
    egress_gb=0.09,
)


def test_replicas_follow_peak_cpu_over_the_hpa_target_share_of_the_request() -> None:
    # 20/s x 0.05 s = 1 core; each pod may use 0.5 x 0.5 = 0.25 core -> 4 pods.
    size = a.replicas_needed(TIER, TRAFFIC.peak_rps)
    assert (size.wanted, size.replicas, size.capped) == (4, 4, False)


def test_replicas_stop_at_the_hpa_maximum_and_say_so() -> None:
    size = a.replicas_needed(TIER, 1000.0)  # 50 cores -> 200 pods wanted
    assert (size.wanted, size.replicas, size.capped) == (200, 10, True)


def test_replicas_never_go_below_the_hpa_minimum() -> None:
    assert a.replicas_needed(TIER, 0.0).replicas == 1


def test_nodes_hold_the_pod_requests_and_the_system_pods() -> None:
    # 4 x 0.5 + 0.25 = 2.25 cores over 2 - 0.5 = 1.5 allocatable -> 2 nodes (memory: 4/6).
    size = a.nodes_needed(POOL, [(TIER, 4)])
    assert (size.wanted, size.nodes) == (2, 2)


def test_gpu_pods_need_one_node_per_gpu() -> None:
    gpu_tier = a.Tier("model", "gpu", 0.75, GiB, 2, 6, 0.7, 0.01, 1, 400.0)
    gpu_pool = a.Pool("gpu", "g", 4, 16 * GiB, 1, 1, 4, 0.5, 0.1, GiB)
    assert a.replicas_needed(gpu_tier, 1.0).replicas == 2  # the HPA minimum
    assert a.nodes_needed(gpu_pool, [(gpu_tier, 2)]).nodes == 2  # not the pool minimum of 1
    assert a.replicas_needed(gpu_tier, 2000.0).replicas == 5


def test_a_kubernetes_month_adds_up_by_hand() -> None:
    estimate = a.kubernetes_month([TIER], [POOL], FIXED, TRAFFIC)
    monthly_predictions = 864_000 * 730 / 24  # 26,280,000
    expected = {
        "EKS control plane": 73.0,  # 0.1 x 730
        "gateway nodes (2 x small)": 146.0,  # 2 x 0.1 x 730
        "gateway EBS root volumes": 0.0,
        "NAT gateway hours": 36.5,  # 0.05 x 730
        "NAT gateway data (image downloads)": monthly_predictions * 100_000 / 1e9 * 0.05,  # 131.4
        "NLB hours": 14.6,  # 0.02 x 730
        # max(10/800 new flows, 10 x 3600 x 1000 B = 0.036 GB/h) x 0.01 x 730
        "NLB capacity units": 0.036 * 0.01 * 730,
        "public IPv4 addresses": 0.0,
        "ECR storage": 0.0,
        "internet egress (answers)": 0.0,
    }
    assert estimate.items.keys() == expected.keys()
    for key, value in expected.items():
        assert estimate.items[key] == pytest.approx(value), key
    assert estimate.monthly == pytest.approx(401.7628)
    assert a.per_million(estimate, TRAFFIC) == pytest.approx(401.7628 / 26.28)


def test_a_what_if_stack_changes_one_tiers_cpu_per_prediction_and_nothing_else() -> None:
    model = a.Tier("model", "gateway", 0.25, GiB, 1, 10, 0.5, 0.01)
    stack = Stack("test", (TIER, model), (POOL,), FIXED)
    heavier = stack.with_cpu_per_request("gateway", 0.1)
    assert [t.cpu_per_request for t in heavier.tiers] == [0.1, 0.01]
    assert heavier.pools == stack.pools and heavier.fixed == stack.fixed
    # peak 20/s x 0.1 s / (0.5 x 0.5 CPU) = 8 gateway pods instead of 4
    assert a.replicas_needed(heavier.tiers[0], 20).replicas == 8
    assert heavier.month(TRAFFIC).monthly > stack.month(TRAFFIC).monthly


def test_burstable_nodes_pay_for_average_cpu_above_their_baseline() -> None:
    burst = a.Pool(**{**POOL.__dict__, "burst_baseline_vcpus": 0.4, "surplus_vcpu_hour": 0.05})
    estimate = a.kubernetes_month([TIER], [burst], FIXED, TRAFFIC)
    # average 10/s x 0.05 = 0.5 core + 0.25 system = 0.75 used, 2 nodes x 0.4 = 0.8 baseline.
    assert estimate.items["gateway T3 surplus CPU credits"] == 0.0
    # 20/s on average, 40/s at the peak: 8 pods, (8 x 0.5 + 0.25) / 1.5 -> 3 nodes, 1.2 baseline;
    # 20 x 0.05 + 0.25 = 1.25 used on average, 0.05 over.
    busier = a.Traffic(1_728_000, 2.0, 0, 0, 0)
    size = a.nodes_needed(burst, [(TIER, a.replicas_needed(TIER, busier.peak_rps).replicas)])
    assert size.nodes == 3
    over = 20 * 0.05 + 0.25 - 3 * 0.4
    estimate = a.kubernetes_month([TIER], [burst], FIXED, busier)
    assert estimate.items["gateway T3 surplus CPU credits"] == pytest.approx(over * 0.05 * 730)


def test_a_lambda_month_bills_download_wait_and_cpu_at_its_vcpu_share() -> None:
    function = a.Lambda(
        memory_mb=2048,  # above 1769 MB: a full vCPU, which is all one thread uses
        download_seconds=0.1,
        cpu_seconds=0.05,
        gb_second=0.00001,
        requests_million=0.2,
    )
    assert a.lambda_seconds(function) == pytest.approx(0.15)
    estimate = a.lambda_month(function, FIXED, TRAFFIC)
    # 26.28M invocations x 0.15 s x 2 GB = 7,884,000 GB-s x 0.00001; requests 26.28 x 0.2.
    assert estimate.items["Lambda duration"] == pytest.approx(78.84)
    assert estimate.items["Lambda requests"] == pytest.approx(5.256)
    half = a.Lambda(884.5, 0.1, 0.05, 0.00001, 0.2)  # half a vCPU: CPU work takes twice as long
    assert a.lambda_seconds(half) == pytest.approx(0.2)


def test_cold_starts_follow_the_chance_of_a_gap_longer_than_the_idle_timeout() -> None:
    assert a.cold_start_fraction(86_400, 1.0, 0.0) == pytest.approx(math.exp(-1))
    assert a.cold_start_fraction(0, 600, 0.001) == 1.0
    assert a.cold_start_fraction(1e9, 600, 0.001) == pytest.approx(0.001)


def test_break_even_is_the_first_volume_where_kubernetes_is_cheaper() -> None:
    found = a.break_even(lambda v: 100.0, lambda v: v / 1000, 1e3, 1e9)
    assert found is not None and 1e5 <= found <= 1.01e5
    assert a.break_even(lambda v: 100.0, lambda v: 1.0, 1e3, 1e9) is None


def test_kube_reserved_follows_the_eks_bootstrap_formula() -> None:
    assert a.kube_reserved_cpu(2) == pytest.approx(0.07)
    assert a.kube_reserved_cpu(4) == pytest.approx(0.08)
    assert a.kube_reserved_memory(17) == (11 * 17 + 255) * 2**20


def test_kubernetes_quantities_read_as_cores_and_bytes() -> None:
    assert quantity("250m") == pytest.approx(0.25)
    assert quantity("1") == 1.0
    assert quantity("384Mi") == 384 * 2**20
    with pytest.raises(BenchError, match="quantity"):
        quantity("lots")


def test_the_infra_program_under_mocks_declares_what_the_report_costs() -> None:
    stack = declared_stack()
    gateway, model = stack.workloads["gateway"], stack.workloads["tf-serving"]
    assert gateway.pool == "gateway" and model.pool == "model"
    assert gateway.hpa_cpu_target is not None and 0 < gateway.hpa_cpu_target <= 1
    assert gateway.cpu_request > 0 and gateway.hpa_min is not None and gateway.hpa_min >= 1
    assert {"gateway", "model"} <= stack.pools.keys()
    assert stack.nat_gateways >= 1 and stack.load_balancers == 1
    gpu = declared_stack(gpu="true")
    assert gpu.workloads["tf-serving"].gpus == 1
    assert gpu.pools["model"].instance_type.startswith("g")


def test_the_measured_figures_come_from_the_benchmark_document() -> None:
    measured = read_measured(REPO / "docs" / "benchmarks.md")
    assert 0 < measured.gateway_cpu_seconds < 0.1
    assert 0 < measured.model_cpu_seconds < 0.1
    assert measured.gateway_clients == 32


def test_a_benchmark_document_without_the_figures_is_a_clear_error(tmp_path: Path) -> None:
    document = tmp_path / "benchmarks.md"
    document.write_text("# Benchmarks\n\nnothing measured yet\n")
    with pytest.raises(BenchError, match="make bench"):
        read_measured(document)
