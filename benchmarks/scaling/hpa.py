"""The Kubernetes HorizontalPodAutoscaler's algorithm for one Resource (CPU) metric.

Follows kubernetes/kubernetes pkg/controller/podautoscaler (horizontal.go,
replica_calculator.go) and the autoscaling/v2 defaults (pkg/apis/autoscaling/v2/defaults.go:
scale up by max(4 pods, 100 %) per 15 s; scale down 100 % per 15 s after the controller's
300 s window):
- ratio = mean utilization of the pods with metrics / target; within the tolerance (0.1,
  the controller's --horizontal-pod-autoscaler-tolerance) nothing changes; otherwise
  desired = ceil(ratio x pods with metrics). When scaling up, pods not ready yet count as 0 %
  (so a starting pod damps the next step), as the controller does for unready pods;
- stabilization: the highest recommendation of the scale-down window and the lowest of the
  scale-up window bound the change (stabilizeRecommendationWithBehaviors);
- rate limits: each policy (Pods or Percent per period) gives a limit from the replica count
  at the start of its period; selectPolicy Max takes the largest change, Min the smallest,
  Disabled none (calculateScaleUpLimitWithScalingRules / ...ScaleDownLimit...);
- min/max replicas.
All durations go through `time_scale` (seconds of emulation per declared second), so a
300 s window lasts 30 s at 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TOLERANCE = 0.1
SYNC_PERIOD_SECONDS = 15.0  # --horizontal-pod-autoscaler-sync-period


@dataclass(frozen=True)
class Policy:
    """One HPAScalingPolicy: `kind` Pods or Percent, `value` per `period` seconds."""

    kind: str
    value: int
    period: float


@dataclass(frozen=True)
class Rules:
    """HPAScalingRules with the API's defaults filled in."""

    stabilization: float
    select: str
    policies: tuple[Policy, ...]


DEFAULT_UP = Rules(0.0, "Max", (Policy("Pods", 4, 15.0), Policy("Percent", 100, 15.0)))
DEFAULT_DOWN = Rules(300.0, "Max", (Policy("Percent", 100, 15.0),))


@dataclass(frozen=True)
class HpaSpec:
    """What an HPA declares for one Deployment (CPU utilization target only)."""

    min_replicas: int
    max_replicas: int
    target_utilization: float  # percent of the pods' CPU request
    scale_up: Rules = DEFAULT_UP
    scale_down: Rules = DEFAULT_DOWN

    @classmethod
    def from_manifest(cls, spec: Mapping[str, Any]) -> HpaSpec:
        """From an autoscaling/v2 HPA spec as the Pulumi program declares it."""
        targets = [
            m["resource"]["target"]["averageUtilization"]
            for m in spec.get("metrics", [])
            if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
        ]
        if len(targets) != 1:
            raise ValueError(f"expected one CPU utilization metric, got {spec.get('metrics')}")
        behavior = spec.get("behavior") or {}
        return cls(
            min_replicas=int(spec.get("minReplicas", 1)),
            max_replicas=int(spec["maxReplicas"]),
            target_utilization=float(targets[0]),
            scale_up=_rules(behavior.get("scaleUp"), DEFAULT_UP),
            scale_down=_rules(behavior.get("scaleDown"), DEFAULT_DOWN),
        )


def _rules(declared: Mapping[str, Any] | None, default: Rules) -> Rules:
    if not declared:
        return default
    policies = tuple(
        Policy(str(p["type"]), int(p["value"]), float(p["periodSeconds"]))
        for p in declared.get("policies", [])
    )
    return Rules(
        stabilization=float(declared.get("stabilizationWindowSeconds", default.stabilization)),
        select=str(declared.get("selectPolicy", default.select)),
        policies=policies or default.policies,
    )


@dataclass
class Autoscaler:
    """One HPA's state: past recommendations and scale events, on a compressed clock."""

    spec: HpaSpec
    time_scale: float = 1.0
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, +added/-removed)

    def recommend(self, now: float, current: int, ready_utilizations: Sequence[float]) -> int:
        """The replica count to scale to, given the utilization (%) of each ready pod."""
        spec = self.spec
        unready = max(0, current - len(ready_utilizations))
        raw = current
        if ready_utilizations:
            ratio = sum(ready_utilizations) / len(ready_utilizations) / spec.target_utilization
            if ratio > 1 and unready:
                # unready pods count as 0 % when the metric asks for more pods
                with_unready = sum(ready_utilizations) / current / spec.target_utilization
                ratio = max(with_unready, 1.0) if with_unready > 1 + TOLERANCE else 1.0
                pods = current
            else:
                pods = len(ready_utilizations)
            if abs(ratio - 1.0) > TOLERANCE:
                raw = math.ceil(ratio * pods)
        self.recommendations.append((now, raw))
        up_window = spec.scale_up.stabilization * self.time_scale
        down_window = spec.scale_down.stabilization * self.time_scale
        horizon = max(up_window, down_window)
        self.recommendations = [(t, r) for t, r in self.recommendations if t >= now - horizon]
        up = min([r for t, r in self.recommendations if t >= now - up_window] or [raw])
        down = max([r for t, r in self.recommendations if t >= now - down_window] or [raw])
        desired = min(max(current, up), down)
        if desired > current:
            desired = min(desired, self._limit(now, current, spec.scale_up, up=True))
        elif desired < current:
            desired = max(desired, self._limit(now, current, spec.scale_down, up=False))
        desired = max(spec.min_replicas, min(spec.max_replicas, desired))
        if desired != current:
            self.events.append((now, desired - current))
        return desired

    def _limit(self, now: float, current: int, rules: Rules, *, up: bool) -> int:
        if rules.select == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            since = now - policy.period * self.time_scale
            added = sum(d for t, d in self.events if t > since and d > 0)
            removed = -sum(d for t, d in self.events if t > since and d < 0)
            start = current - added + removed
            if up:
                proposals.append(
                    start + policy.value
                    if policy.kind == "Pods"
                    else math.ceil(start * (1 + policy.value / 100))
                )
            else:
                proposals.append(
                    start - policy.value
                    if policy.kind == "Pods"
                    else int(start * (1 - policy.value / 100))
                )
        biggest_change = max if up else min
        smallest_change = min if up else max
        return (biggest_change if rules.select == "Max" else smallest_change)(proposals)
