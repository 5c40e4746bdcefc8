"""HorizontalPodAutoscaler and PodDisruptionBudget for a Deployment."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from clothing_infra.labels import fields, selector_labels

CPU_TARGET_PERCENT = 70


def autoscale_and_protect(
    name: str,
    *,
    deployment: k8s.apps.v1.Deployment,
    workload: str,
    namespace: pulumi.Input[str],
    meta_labels: dict[str, str],
    min_replicas: int,
    max_replicas: int,
    parent: pulumi.Resource,
) -> None:
    """Scale the Deployment on CPU between the bounds; let disruptions take one pod at a time."""
    metadata = {"name": workload, "namespace": namespace, "labels": meta_labels}
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        f"{name}-hpa",
        metadata=fields(metadata),
        spec=fields(
            {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload},
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": CPU_TARGET_PERCENT,
                            },
                        },
                    }
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            }
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[deployment]),
    )
    # maxUnavailable rather than minAvailable: it never blocks a node drain outright, even
    # when the HPA is at one replica.
    k8s.policy.v1.PodDisruptionBudget(
        f"{name}-pdb",
        metadata=fields(metadata),
        spec=fields({"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(workload)}}),
        opts=pulumi.ResourceOptions(parent=parent),
    )
