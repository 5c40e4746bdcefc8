"""What the Pulumi program declares, read by running it under Pulumi's mocks.

The program runs through the infra package's own harness (`clothing_infra.declared.declare`,
the one tests/infra uses: a fresh interpreter, cwd infra/), and the sizes are read from what
it registered: the rendered Deployment, HorizontalPodAutoscaler and Service manifests, the
managed node groups, their launch templates and the NAT gateways. Nothing is read from
infra's Python names, so moving where a value is declared (e.g. the one gateway sizing
declaration) changes nothing here as long as the manifests carry it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clothing_infra.declared import ProgramError, declare, dev_config

from benchmarks.config import REPO, BenchError

POOL_LABEL = "clothing-serving/pool"
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
}


def quantity(value: str | float | int) -> float:
    """A Kubernetes resource quantity ("250m", "1", "384Mi") as a number (cores or bytes)."""
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise BenchError(f"cannot read the Kubernetes quantity {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


@dataclass(frozen=True)
class DeclaredWorkload:
    """A Deployment's pod requests and limits, its pool, and its HPA if it has one."""

    name: str
    pool: str | None
    replicas: int | None  # fixed count, when no HPA owns it
    cpu_request: float
    cpu_limit: float
    memory_request: float
    memory_limit: float
    gpus: int
    hpa_min: int | None
    hpa_max: int | None
    hpa_cpu_target: float | None
    env: dict[str, str]


@dataclass(frozen=True)
class DeclaredPool:
    """A managed node group."""

    name: str
    instance_type: str
    capacity_type: str
    min_nodes: int
    max_nodes: int
    disk_gb: float


@dataclass(frozen=True)
class DeclaredStack:
    """The parts of one stack variant the capacity report needs."""

    workloads: dict[str, DeclaredWorkload]
    pools: dict[str, DeclaredPool]
    nat_gateways: int
    load_balancers: int
    public_subnets: int
    repositories: int


def run_program(**overrides: str) -> list[dict[str, Any]]:
    """The program's registrations under mocks for the dev stack with these config keys."""
    model = str(REPO / "services" / "model" / "clothing-model")
    try:
        return declare(dev_config(model_path=model, **overrides)).resources
    except ProgramError as exc:
        raise BenchError(f"the infra program failed under mocks: {exc}") from None


def _number(value: Any) -> int:
    return int(float(value))


def parse(resources: list[dict[str, Any]]) -> DeclaredStack:
    """The workloads, pools and network pieces among the registrations."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in resources:
        by_type.setdefault(record["type"], []).append(record["inputs"])
    hpas = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]
        for h in by_type.get("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", [])
    }
    workloads = {}
    for deployment in by_type.get("kubernetes:apps/v1:Deployment", []):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        totals = {"cpu_r": 0.0, "cpu_l": 0.0, "mem_r": 0.0, "mem_l": 0.0, "gpu": 0.0}
        env: dict[str, str] = {}
        for container in pod["containers"]:
            sizing = container.get("resources", {})
            requests, limits = sizing.get("requests", {}), sizing.get("limits", {})
            totals["cpu_r"] += quantity(requests.get("cpu", 0))
            totals["cpu_l"] += quantity(limits.get("cpu", requests.get("cpu", 0)))
            totals["mem_r"] += quantity(requests.get("memory", 0))
            totals["mem_l"] += quantity(limits.get("memory", requests.get("memory", 0)))
            totals["gpu"] += quantity(limits.get("nvidia.com/gpu", 0))
            env.update(
                {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
            )
        hpa = hpas.get(name)
        target = None
        if hpa:
            for metric in hpa.get("metrics", []):
                resource = metric.get("resource", {})
                if resource.get("name") == "cpu":
                    target = float(resource["target"]["averageUtilization"]) / 100
        replicas = deployment["spec"].get("replicas")
        workloads[name] = DeclaredWorkload(
            name=name,
            pool=(pod.get("nodeSelector") or {}).get(POOL_LABEL),
            replicas=None if replicas is None else _number(replicas),
            cpu_request=totals["cpu_r"],
            cpu_limit=totals["cpu_l"],
            memory_request=totals["mem_r"],
            memory_limit=totals["mem_l"],
            gpus=int(totals["gpu"]),
            hpa_min=_number(hpa["minReplicas"]) if hpa else None,
            hpa_max=_number(hpa["maxReplicas"]) if hpa else None,
            hpa_cpu_target=target,
            env=env,
        )
    disks = {}
    for template in resources:
        if template["type"] == "aws:ec2/launchTemplate:LaunchTemplate":
            mappings = template["inputs"].get("blockDeviceMappings", [])
            disks[template["name"]] = sum(float(m["ebs"]["volumeSize"]) for m in mappings)
    pools = {}
    for record in resources:
        if record["type"] != "eks:index:ManagedNodeGroup":
            continue
        group = record["inputs"]
        label = (group.get("labels") or {}).get(POOL_LABEL, record["name"])
        scaling = group["scalingConfig"]
        pools[label] = DeclaredPool(
            name=label,
            instance_type=group["instanceTypes"][0],
            capacity_type=group.get("capacityType", "ON_DEMAND"),
            min_nodes=_number(scaling["minSize"]),
            max_nodes=_number(scaling["maxSize"]),
            disk_gb=disks.get(record["name"], 0.0),
        )
    subnets = by_type.get("aws:ec2/subnet:Subnet", [])
    return DeclaredStack(
        workloads=workloads,
        pools=pools,
        nat_gateways=len(by_type.get("aws:ec2/natGateway:NatGateway", [])),
        load_balancers=sum(
            1
            for s in by_type.get("kubernetes:core/v1:Service", [])
            if s.get("spec", {}).get("type") == "LoadBalancer"
        ),
        # The NLB takes one public address in each subnet tagged for internet-facing ELBs.
        public_subnets=sum(1 for s in subnets if "kubernetes.io/role/elb" in (s.get("tags") or {})),
        repositories=len(by_type.get("aws:ecr/repository:Repository", [])),
    )


def declared_stack(**overrides: str) -> DeclaredStack:
    """Run the program for the dev stack (with overrides) and read what it declared."""
    return parse(run_program(**overrides))
