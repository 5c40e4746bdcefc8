"""Pod building blocks shared by the workloads: labels, security contexts, placement, pod spec."""

from __future__ import annotations

from typing import Any

POOL_LABEL = "clothing-serving/pool"
GATEWAY_POOL = "gateway"
MODEL_POOL = "model"


def fields(value: Any) -> Any:
    """Kubernetes fields in Kubernetes' own camelCase spelling, passed through untyped.

    pulumi_kubernetes types its dict inputs with snake_case TypedDicts; writing manifests as
    Kubernetes documents them reads better, and the tests validate every object against the
    Kubernetes schema instead.
    """
    return value


# Non-root IDs above 10000 so they never collide with a host user.
RUN_AS_USER = 10001
RUN_AS_GROUP = 10001


def app_labels(name: str, component: str) -> dict[str, str]:
    """Recommended Kubernetes labels; the selector uses only the stable name label."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "clothing-serving",
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector_labels(name: str) -> dict[str, str]:
    """The labels a Service, PDB or NetworkPolicy selects a workload's pods by."""
    return {"app.kubernetes.io/name": name}


def pod_security_context() -> dict[str, Any]:
    """Pod-level settings that meet the Pod Security `restricted` profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        # Mounted Secrets are group-owned by this GID, so files can be 0440.
        "fsGroup": RUN_AS_GROUP,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level settings that meet the Pod Security `restricted` profile."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pool_placement(pool: str | None) -> dict[str, Any]:
    """nodeSelector and toleration putting a pod on its node pool (nothing in a foreign cluster)."""
    if pool is None:
        return {}
    placement: dict[str, Any] = {"nodeSelector": {POOL_LABEL: pool}}
    if pool == MODEL_POOL:
        placement["tolerations"] = [
            {"key": POOL_LABEL, "operator": "Equal", "value": MODEL_POOL, "effect": "NoSchedule"}
        ]
    return placement


def spread_over_zones_and_nodes(name: str) -> list[dict[str, Any]]:
    """Replicas in different zones and on different nodes where the nodes exist.

    Zones: ScheduleAnyway, so a zone without capacity never blocks a rollout. Nodes:
    ScheduleAnyway too, since a required spread would leave a surge pod Pending on a pool
    at its maximum size; node redundancy comes from the pools' two-node minimum instead.
    """
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(name)},
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def restricted_pod_spec(
    name: str,
    service_account: Any,
    grace_seconds: int,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pool: str | None,
) -> dict[str, Any]:
    """A pod spec meeting Pod Security `restricted`, spread over zones, placed on its pool."""
    return {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": grace_seconds,
        "containers": containers,
        "volumes": volumes,
        "topologySpreadConstraints": spread_over_zones_and_nodes(name),
        **pool_placement(pool),
    }
