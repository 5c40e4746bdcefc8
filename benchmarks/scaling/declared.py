"""What the Pulumi program declares for each tier, read from the program run under Pulumi's mocks.

The program is the one home of the HPA specs, rolling-update strategy, CPU requests, preStop
sleeps and TF Serving's flags; the harness runs it (tests/infra/program_runner.py, the runner
the infra tests use, in its own interpreter with cwd infra/ as the Pulumi CLI would) and
reads the registered Kubernetes objects. Nothing here is a copy of those values, except the
documented fallback for TF Serving's connection age while the program does not pass
--grpc_channel_arguments yet (the values agreed between helpers).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.config import REPO, BenchError
from benchmarks.scaling.hpa import HpaSpec

RUNNER = REPO / "tests" / "infra" / "program_runner.py"
PROJECT = "clothing-serving"
HPA_TYPE = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
DEPLOYMENT_TYPE = "kubernetes:apps/v1:Deployment"
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


def run_program(work: Path) -> list[dict[str, Any]]:
    """Run the Pulumi program (dev stack config) under mocks; its resource registrations."""
    work.mkdir(parents=True, exist_ok=True)
    model = work / "clothing-model"
    version = model / "1"
    (version / "variables").mkdir(parents=True, exist_ok=True)
    (version / "saved_model.pb").write_bytes(b"\x08\x01")  # the program only checks the layout
    (version / "variables" / "variables.index").write_bytes(b"index")
    document = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    config = {key: str(value) for key, value in document["config"].items()}
    config[f"{PROJECT}:model_path"] = str(model)
    (work / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(work / "config.json"), str(work / "declared.json")],
        cwd=REPO / "infra",
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise BenchError(f"the Pulumi program failed under mocks: {done.stderr.strip()[-400:]}")
    resources: list[dict[str, Any]] = json.loads((work / "declared.json").read_text())["resources"]
    return resources


def read_declared(work: Path | None = None) -> Declared:
    """Run the program and pick out both tiers."""
    if work is None:
        work = Path(tempfile.mkdtemp(prefix="scaling-program-"))
    resources = run_program(work)
    deployments = {
        r["inputs"]["metadata"]["name"]: r["inputs"]
        for r in resources
        if r["type"] == DEPLOYMENT_TYPE
    }
    hpas = {
        r["inputs"]["spec"]["scaleTargetRef"]["name"]: r["inputs"]
        for r in resources
        if r["type"] == HPA_TYPE
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
