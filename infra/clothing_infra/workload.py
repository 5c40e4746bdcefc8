"""One workload: ServiceAccount, restricted pod spec, Deployment, HPA and PDB."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from clothing_infra import pods
from clothing_infra.pods import fields
from clothing_infra.settings import Replicas

CPU_TARGET_PERCENT = 70

# Both tiers keep their capacity through a rollout: a new pod first, an old one only once
# the new one is ready.
ROLLING_UPDATE = {"maxSurge": 1, "maxUnavailable": 0}

# Explicit, so the scaling harness (benchmarks/scaling) emulates exactly what is declared.
# Up: Kubernetes' own defaults (double, or +4 pods, every 15 s, no stabilization). Down: the
# highest recommendation of the last 5 minutes, then at most one pod a minute, so each
# removed pod has drained before the next goes.
HPA_BEHAVIOR: Mapping[str, Any] = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    },
}


@dataclass(frozen=True)
class WorkloadArgs:
    """A Deployment's pods, their placement and how they scale and roll out."""

    name: str
    component: str
    namespace: pulumi.Input[str]
    containers: Sequence[Mapping[str, Any]]
    volumes: Sequence[Mapping[str, Any]]
    node_pool: str | None
    replicas: Replicas
    grace_seconds: int
    # The longest a new pod may take to become ready (image pull, model load).
    rollout_seconds: int
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()


@dataclass(frozen=True)
class Workload:
    """The objects deploy_workload declared."""

    deployment: k8s.apps.v1.Deployment
    meta_labels: dict[str, str]
    selector: dict[str, str]


def hpa_spec(workload: str, replicas: Replicas) -> dict[str, Any]:
    """HorizontalPodAutoscaler spec: CPU utilisation of the requests, explicit behaviour."""
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload},
        "minReplicas": replicas.min,
        "maxReplicas": replicas.max,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT},
                },
            }
        ],
        "behavior": HPA_BEHAVIOR,
    }


def deploy_workload(resource_name: str, args: WorkloadArgs, parent: pulumi.Resource) -> Workload:
    """Declare the workload's ServiceAccount, Deployment, HPA and PDB under `parent`."""
    child = pulumi.ResourceOptions(parent=parent)
    meta_labels = pods.app_labels(args.name, args.component)
    selector = pods.selector_labels(args.name)
    metadata = {"name": args.name, "namespace": args.namespace, "labels": meta_labels}

    account = k8s.core.v1.ServiceAccount(
        f"{resource_name}-sa",
        metadata=fields(metadata),
        automount_service_account_token=False,
        opts=child,
    )
    pod_spec = pods.restricted_pod_spec(
        args.name,
        account.metadata.name,
        args.grace_seconds,
        [dict(container) for container in args.containers],
        [dict(volume) for volume in args.volumes],
        args.node_pool,
    )
    template_metadata: dict[str, Any] = {"labels": meta_labels}
    if args.pod_annotations:
        template_metadata["annotations"] = dict(args.pod_annotations)
    # pulumi-kubernetes waits for the rollout (provider/pkg/await/deployment.go); its default
    # of 10 minutes is shorter than a cold pull plus a model load.
    timeouts = pulumi.CustomTimeouts(
        create=f"{args.rollout_seconds + 300}s", update=f"{args.rollout_seconds + 300}s"
    )
    deployment = k8s.apps.v1.Deployment(
        f"{resource_name}-deployment",
        metadata=fields(metadata),
        spec=fields(
            {
                # No `replicas`: the HorizontalPodAutoscaler owns the count.
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": ROLLING_UPDATE},
                "progressDeadlineSeconds": args.rollout_seconds,
                "template": {"metadata": template_metadata, "spec": pod_spec},
            }
        ),
        opts=pulumi.ResourceOptions(
            parent=parent, custom_timeouts=timeouts, depends_on=list(args.depends_on)
        ),
    )
    k8s.autoscaling.v2.HorizontalPodAutoscaler(
        f"{resource_name}-hpa",
        metadata=fields(metadata),
        spec=fields(hpa_spec(args.name, args.replicas)),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[deployment]),
    )
    # maxUnavailable rather than minAvailable: it never blocks a node drain outright, even
    # when the HPA is at one replica.
    k8s.policy.v1.PodDisruptionBudget(
        f"{resource_name}-pdb",
        metadata=fields(metadata),
        spec=fields({"maxUnavailable": 1, "selector": {"matchLabels": selector}}),
        opts=child,
    )
    return Workload(deployment=deployment, meta_labels=meta_labels, selector=selector)


def scraping_policy(
    resource_name: str,
    *,
    workload: Workload,
    namespace: pulumi.Input[str],
    monitoring_namespace: str,
    port: int,
    parent: pulumi.Resource,
) -> k8s.networking.v1.NetworkPolicy:
    """Let pods of the monitoring namespace (Prometheus) reach the workload's metrics port."""
    name = f"{workload.selector['app.kubernetes.io/name']}-metrics"
    return k8s.networking.v1.NetworkPolicy(
        resource_name,
        metadata=fields({"name": name, "namespace": namespace, "labels": workload.meta_labels}),
        spec=fields(
            {
                "podSelector": {"matchLabels": workload.selector},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {
                                        "kubernetes.io/metadata.name": monitoring_namespace
                                    }
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": port}],
                    }
                ],
            }
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def pod_monitor(
    resource_name: str,
    *,
    workload: Workload,
    namespace: pulumi.Input[str],
    port_name: str,
    path: str,
    parent: pulumi.Resource,
) -> k8s.apiextensions.CustomResource:
    """A Prometheus Operator PodMonitor for the workload's metrics port (needs the CRD)."""
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version="monitoring.coreos.com/v1",
        kind="PodMonitor",
        metadata=fields(
            {
                "name": workload.selector["app.kubernetes.io/name"],
                "namespace": namespace,
                "labels": workload.meta_labels,
            }
        ),
        spec=fields(
            {
                "selector": {"matchLabels": workload.selector},
                "podMetricsEndpoints": [{"port": port_name, "path": path, "interval": "15s"}],
            }
        ),
        opts=pulumi.ResourceOptions(parent=parent),
    )
