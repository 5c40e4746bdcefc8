"""The HPA emulator follows the Kubernetes HorizontalPodAutoscaler's algorithm."""

from __future__ import annotations

from benchmarks.scaling.hpa import DEFAULT_DOWN, Autoscaler, HpaSpec, Policy, Rules

SPEC = HpaSpec(min_replicas=2, max_replicas=6, target_utilization=70)


def test_scales_by_the_ratio_of_utilization_to_target() -> None:
    # 2 pods at 140 % of a 70 % target: ratio 2 -> 4 pods
    assert Autoscaler(SPEC).recommend(0, 2, [140, 140]) == 4


def test_within_tolerance_nothing_changes() -> None:
    assert Autoscaler(SPEC).recommend(0, 3, [76, 76, 76]) == 3  # ratio 1.086 <= 1.1
    assert Autoscaler(SPEC).recommend(0, 3, [64, 64, 64]) == 3  # ratio 0.914 >= 0.9


def test_min_and_max_bound_the_count() -> None:
    assert Autoscaler(SPEC).recommend(0, 2, [700, 700]) == 6
    hpa = Autoscaler(HpaSpec(2, 6, 70, scale_down=Rules(0, "Max", DEFAULT_DOWN.policies)))
    assert hpa.recommend(0, 3, [1, 1, 1]) == 2


def test_scale_down_waits_for_the_stabilization_window() -> None:
    hpa = Autoscaler(SPEC)  # default 300 s scale-down window
    assert hpa.recommend(0, 4, [70, 70, 70, 70]) == 4
    assert hpa.recommend(15, 4, [10, 10, 10, 10]) == 4  # the 4 of t=0 is still in the window
    assert hpa.recommend(299, 4, [10, 10, 10, 10]) == 4
    assert hpa.recommend(301, 4, [10, 10, 10, 10]) == 2


def test_time_scale_compresses_the_windows() -> None:
    hpa = Autoscaler(SPEC, time_scale=0.1)
    assert hpa.recommend(0, 4, [70, 70, 70, 70]) == 4
    assert hpa.recommend(29, 4, [10, 10, 10, 10]) == 4
    assert hpa.recommend(31, 4, [10, 10, 10, 10]) == 2


def test_scale_up_rate_is_limited_by_the_policies() -> None:
    spec = HpaSpec(1, 100, 50, scale_up=Rules(0, "Max", (Policy("Pods", 2, 60),)))
    hpa = Autoscaler(spec)
    assert hpa.recommend(0, 2, [500, 500]) == 4  # wants 20, +2 per 60 s
    assert hpa.recommend(30, 4, [500] * 4) == 4  # the 2 added at t=0 used this period
    assert hpa.recommend(61, 4, [500] * 4) == 6
    default = Autoscaler(HpaSpec(1, 100, 50))  # max(+4 pods, +100 %) per 15 s
    assert default.recommend(0, 10, [500] * 10) == 20


def test_unready_pods_count_as_idle_when_scaling_up() -> None:
    # 2 ready at 140 % and 2 still starting: (280 / 4) / 70 = 1.0 -> no further scale-up
    assert Autoscaler(SPEC).recommend(0, 4, [140, 140]) == 4


def test_hpa_spec_is_read_from_a_manifest_with_defaults() -> None:
    spec = HpaSpec.from_manifest(
        {
            "minReplicas": 2.0,
            "maxReplicas": 6.0,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70.0},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120.0}},
        }
    )
    assert (spec.min_replicas, spec.max_replicas, spec.target_utilization) == (2, 6, 70.0)
    assert (
        spec.scale_down.stabilization == 120 and spec.scale_down.policies == DEFAULT_DOWN.policies
    )
    assert spec.scale_up.policies == (Policy("Pods", 4, 15.0), Policy("Percent", 100, 15.0))
