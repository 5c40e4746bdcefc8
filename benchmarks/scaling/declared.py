"""What the Pulumi program declares for each tier, read from the program run under Pulumi's mocks.

The program is the one home of the HPA specs, rolling-update strategy, CPU requests, preStop
sleeps, TF Serving's flags and the gateway's sizing; the harness runs it through the infra
package's public `clothing_infra.declared.kubernetes_objects()` (the dev stack's config) and
reads the Kubernetes objects. Nothing here is a copy of those values, except a documented
fallback for TF Serving's connection age if the program passed no --grpc_channel_arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clothing_infra.declared import ProgramError, kubernetes_objects

from benchmarks.config import BenchError
from benchmarks.scaling.hpa import HpaSpec

TIERS = {"gateway": "gateway", "model": "tf-serving"}  # tier -> Deployment name
# COMMON.md "Model tier drain" initial values, used only when the program has no such flag.
FALLBACK_CHANNEL_ARGUMENTS = (
    "grpc.max_connection_age_ms=30000,grpc.max_connection_age_grace_ms=10000"
)


@dataclass(frozen=True)
class Tier:
    """One Deployment's scaling-relevant declarations."""

    deployment: str
    hpa: HpaSpec
    max_surge: int
    max_unavailable: int
    cpu_request: float  # cores
    pre_stop_seconds: float
    termination_grace_seconds: float
    args: tuple[str, ...]
    env: dict[str, str]

    def flag(self, name: str) -> str | None:
        """The value of `--name=value` in the container's args, if present."""
        prefix = f"--{name}="
        return next((a.removeprefix(prefix) for a in self.args if a.startswith(prefix)), None)


@dataclass(frozen=True)
class Declared:
    """Both tiers, and where TF Serving's channel arguments came from."""

    gateway: Tier
    model: Tier
    channel_arguments: str
    channel_arguments_source: str


def _cpu(quantity: str | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _tier(deployment: dict[str, Any], hpa: dict[str, Any]) -> Tier:
    spec = deployment["spec"]
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
    return Tier(
        deployment=deployment["metadata"]["name"],
        hpa=HpaSpec.from_manifest(hpa["spec"]),
        max_surge=int(rolling.get("maxSurge", 1)),
        max_unavailable=int(rolling.get("maxUnavailable", 0)),
        cpu_request=_cpu(container["resources"]["requests"]["cpu"]),
        pre_stop_seconds=float(pre_stop.get("seconds", 0)),
        termination_grace_seconds=float(pod.get("terminationGracePeriodSeconds", 30)),
        args=tuple(str(a) for a in container.get("args", [])),
        env={e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e},
    )


def read_declared() -> Declared:
    """Run the program (dev stack) under mocks and pick out both tiers."""
    try:
        objects = kubernetes_objects()
    except ProgramError as exc:
        raise BenchError(f"the Pulumi program failed under mocks: {str(exc)[-400:]}") from None
    deployments = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Deployment"}
    hpas = {
        o["spec"]["scaleTargetRef"]["name"]: o
        for o in objects
        if o.get("kind") == "HorizontalPodAutoscaler"
    }
    tiers = {}
    for tier, name in TIERS.items():
        if name not in deployments or name not in hpas:
            raise BenchError(f"the program declares no Deployment and HPA named {name!r}")
        tiers[tier] = _tier(deployments[name], hpas[name])
    declared_args = tiers["model"].flag("grpc_channel_arguments")
    return Declared(
        gateway=tiers["gateway"],
        model=tiers["model"],
        channel_arguments=declared_args or FALLBACK_CHANNEL_ARGUMENTS,
        channel_arguments_source="the Pulumi program" if declared_args else "COMMON.md fallback",
    )
