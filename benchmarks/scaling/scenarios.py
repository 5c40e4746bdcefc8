"""The scaling scenarios, run one after another on one local stack; figures go to JSON.

Each scenario offers open-loop load through haproxy and changes the replicas the way
Kubernetes would (a new pod, a rolling update with the declared maxSurge/maxUnavailable, a
scale-in through the drain sequence, kill -9), or lets the HPA emulator do it (the ramp).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.config import REPO
from benchmarks.scaling import loadgen
from benchmarks.scaling.declared import Declared
from benchmarks.scaling.hpa import SYNC_PERIOD_SECONDS, Autoscaler
from benchmarks.scaling.stack import Replica, Stack


@dataclass
class Load:
    """A running load generator and where its records go."""

    process: subprocess.Popen[bytes]
    out: Path
    profile: list[tuple[float, float]]
    started: float  # stack time

    def wait(self) -> None:
        """Until the profile has been sent and every answer is in."""
        self.process.wait()


def start_load(stack: Stack, bodies: Path, profile: list[tuple[float, float]], name: str) -> Load:
    """Start the open-loop load generator against haproxy."""
    profile_file = stack.work / f"{name}.profile.json"
    profile_file.write_text(json.dumps(profile))
    out = stack.work / f"{name}.requests.txt"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scaling.loadgen", f"{stack.lb_url}/predict",
         str(bodies), str(profile_file), str(out)],
        cwd=REPO, start_new_session=True,
    )  # fmt: skip
    return Load(process, out, profile, stack.now())


def read_requests(stack: Stack, load: Load) -> list[tuple[float, float, str]]:
    """(stack time, latency, outcome) of every request a load generator sent."""
    records = []
    for line in load.out.read_text().splitlines():
        record = loadgen.parse(line)
        records.append((record.start - stack.t0, record.latency, record.outcome))
    return records


def read_answers(load: Load) -> list[loadgen.Record]:
    """Every request a load generator sent, with the version and top class answered."""
    return [loadgen.parse(line) for line in load.out.read_text().splitlines()]


def replace_model_tier(stack: Stack) -> None:
    """A rolling update of the model Deployment with its declared maxSurge / maxUnavailable 0.

    New replicas start with the stack's current model config; each batch of old ones is
    drained only once its replacements serve. Returns when every old replica has stopped.
    """
    surge = max(1, stack.declared.model.max_surge)
    old = list(stack.tier("model"))
    drains = []
    while old:
        batch, old = old[:surge], old[surge:]
        new = [stack.add("model") for _ in batch]
        stack.wait_ready(new)  # maxUnavailable 0: the old ones go only once these serve
        drains += [stack.drain(r, wait=False) for r in batch]
    for thread in drains:
        thread.join()


def failures(records: list[tuple[float, float, str]], start: float, end: float) -> dict[str, int]:
    """Failed requests (5xx or connection-level) started in [start, end), by outcome."""
    counted: dict[str, int] = {}
    for t, _, outcome in records:
        if start <= t < end and not (outcome.isdigit() and int(outcome) < 500):
            counted[outcome] = counted.get(outcome, 0) + 1
    return counted


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def request_scale(declared: Declared, local_max: int, cpus: int) -> float:
    """The factor that makes `local_max` pods of each tier request exactly `cpus` CPUs.

    A scheduler places pods on a node only while their requests fit its allocatable CPU, so
    a pod at 100 % of its request is using CPU that really is its own. Here up to
    `local_max` pods of each tier share this machine's CPUs: at the declared requests they
    would overcommit it, and each pod's utilization would read low by the overcommit factor,
    so the HPA would never see the load a real node shows. Scaling both tiers' requests by
    the same factor keeps their ratio (the program's choice) and fits them to the machine.
    """
    per_slot = declared.gateway.cpu_request + declared.model.cpu_request
    return min(1.0, cpus / (local_max * per_slot))


def model_counts(stack: Stack, start: float, end: float) -> dict[str, float]:
    """Predictions each model replica served in [start, end], from its scraped counters."""
    per: dict[str, list[tuple[float, float]]] = {}
    for sample in stack.samples:
        if sample.tier == "model" and start <= sample.t <= end:
            per.setdefault(sample.replica, []).append(
                (sample.t, sample.values.get("predict_OK", 0))
            )
    return {name: points[-1][1] - points[0][1] for name, points in per.items() if points}


@dataclass
class HpaLoop:
    """The HPA emulator for both tiers, on a compressed clock."""

    stack: Stack
    time_scale: float
    local_max: int
    # the pods' CPU requests as the HPA divides by them, x this (see request_scale())
    request_scale: float = 1.0
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        declared = self.stack.declared
        self.tiers = {"gateway": declared.gateway, "model": declared.model}
        self.autoscalers = {
            tier: Autoscaler(t.hpa, self.time_scale) for tier, t in self.tiers.items()
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        """Sync every SYNC_PERIOD_SECONDS x time_scale."""
        for tier in self.tiers:
            for replica in self.stack.tier(tier):
                replica.cpu_mark = (time.monotonic(), replica.cpu_seconds())
        self._thread.start()

    def stop(self) -> None:
        """Stop syncing."""
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(SYNC_PERIOD_SECONDS * self.time_scale):
            for tier, declared in self.tiers.items():
                self.sync(tier, declared.cpu_request * self.request_scale)

    def sync(self, tier: str, cpu_request: float) -> None:
        """One HPA sync for a tier: read CPU, recommend, start or drain replicas."""
        stack = self.stack
        ready = stack.tier(tier)
        starting = stack.tier(tier, ("starting",))
        current = len(ready) + len(starting)
        utilizations = [stack.utilization(r, cpu_request) for r in ready]
        desired = self.autoscalers[tier].recommend(stack.now(), current, utilizations)
        desired = min(desired, self.local_max)
        self.decisions.append(
            {
                "t": round(stack.now(), 2),
                "tier": tier,
                "current": current,
                "desired": desired,
                "utilization": round(sum(utilizations) / len(utilizations), 1)
                if utilizations
                else None,
            }
        )
        if desired > current:
            stack.note(f"HPA {tier}: {current} -> {desired}")
            for _ in range(desired - current):
                stack.add(tier)
        elif desired < current:
            stack.note(f"HPA {tier}: {current} -> {desired}")
            # the ReplicaSet deletes unready pods first, then the newest
            victims: list[Replica] = sorted(starting, key=lambda r: -r.started_at) + sorted(
                ready, key=lambda r: -r.started_at
            )
            for replica in victims[: current - desired]:
                stack.drain(replica, wait=False)
