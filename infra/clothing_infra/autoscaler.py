"""Cluster Autoscaler: adds nodes when the HorizontalPodAutoscalers add pods that do not fit."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from clothing_infra import pods
from clothing_infra.cluster import AUTOSCALER_NAMESPACE, AUTOSCALER_SERVICE_ACCOUNT
from clothing_infra.pods import fields

NAME = "cluster-autoscaler"
CHECKOV_SKIPS = {
    # checkov reads skips from annotations: "<check id>=<reason>"; one key per check.
    "checkov.io/skip1": "CKV_K8S_43=Upstream release tag of registry.k8s.io; pin the digest "
    "you have verified with `crane digest` before production use",
    "checkov.io/skip2": "CKV_K8S_38=The autoscaler talks to the Kubernetes API, so it needs "
    "its service account token",
}

# The rules of the upstream AWS example manifest, narrowed to what the autoscaler reads.
CLUSTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["events", "endpoints"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["update"]},
    {
        "apiGroups": [""],
        "resources": ["endpoints"],
        "resourceNames": ["cluster-autoscaler"],
        "verbs": ["get", "update"],
    },
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["watch", "list", "get", "update"]},
    {
        "apiGroups": [""],
        "resources": [
            "namespaces",
            "pods",
            "services",
            "replicationcontrollers",
            "persistentvolumeclaims",
            "persistentvolumes",
        ],
        "verbs": ["watch", "list", "get"],
    },
    {
        "apiGroups": ["extensions"],
        "resources": ["replicasets", "daemonsets"],
        "verbs": ["watch", "list", "get"],
    },
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["watch", "list"]},
    {
        "apiGroups": ["apps"],
        "resources": ["statefulsets", "replicasets", "daemonsets"],
        "verbs": ["watch", "list", "get"],
    },
    {
        "apiGroups": ["storage.k8s.io"],
        "resources": [
            "storageclasses",
            "csinodes",
            "csidrivers",
            "csistoragecapacities",
            "volumeattachments",
        ],
        "verbs": ["watch", "list", "get"],
    },
    {
        "apiGroups": ["batch", "extensions"],
        "resources": ["jobs"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resourceNames": ["cluster-autoscaler"],
        "resources": ["leases"],
        "verbs": ["get", "update"],
    },
    {
        "apiGroups": ["resource.k8s.io"],
        "resources": ["resourceclaims", "resourceslices", "deviceclasses"],
        "verbs": ["get", "list", "watch"],
    },
]
NAMESPACE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "list", "watch"]},
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["cluster-autoscaler-status", "cluster-autoscaler-priority-expander"],
        "verbs": ["delete", "get", "update", "watch"],
    },
]


def autoscaler_args(cluster_name: str) -> list[str]:
    """Flags: discover this cluster's node groups by the tags EKS puts on their ASGs."""
    return [
        "--cloud-provider=aws",
        "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,"
        f"k8s.io/cluster-autoscaler/{cluster_name}",
        "--balance-similar-node-groups",
        "--expander=least-waste",
        "--skip-nodes-with-local-storage=false",
        "--skip-nodes-with-system-pods=false",
        "--scale-down-unneeded-time=5m",
        "--stderrthreshold=info",
        "--v=2",
    ]


class ClusterAutoscaler(pulumi.ComponentResource):
    """The autoscaler's RBAC and Deployment; AWS access comes from an EKS Pod Identity."""

    def __init__(
        self,
        name: str,
        *,
        cluster_name: str,
        region: str,
        image: str,
        node_pool: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:k8s:ClusterAutoscaler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        meta = {
            "namespace": AUTOSCALER_NAMESPACE,
            "labels": pods.app_labels(NAME, "autoscaler"),
        }
        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=fields({**meta, "name": AUTOSCALER_SERVICE_ACCOUNT}), opts=child
        )
        cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-cluster-role",
            metadata=fields({"name": NAME, "labels": meta["labels"]}),
            rules=fields(CLUSTER_RULES),
            opts=child,
        )
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-cluster-role-binding",
            metadata=fields({"name": NAME, "labels": meta["labels"]}),
            role_ref=fields(
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": cluster_role.metadata.name,
                }
            ),
            subjects=fields(
                [
                    {
                        "kind": "ServiceAccount",
                        "name": account.metadata.name,
                        "namespace": AUTOSCALER_NAMESPACE,
                    }
                ]
            ),
            opts=child,
        )
        role = k8s.rbac.v1.Role(
            f"{name}-role",
            metadata=fields({**meta, "name": NAME}),
            rules=fields(NAMESPACE_RULES),
            opts=child,
        )
        k8s.rbac.v1.RoleBinding(
            f"{name}-role-binding",
            metadata=fields({**meta, "name": NAME}),
            role_ref=fields(
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": role.metadata.name,
                }
            ),
            subjects=fields(
                [
                    {
                        "kind": "ServiceAccount",
                        "name": account.metadata.name,
                        "namespace": AUTOSCALER_NAMESPACE,
                    }
                ]
            ),
            opts=child,
        )
        selector = pods.selector_labels(NAME)
        container = {
            "name": NAME,
            "image": image,
            "imagePullPolicy": "Always",
            "command": ["./cluster-autoscaler"],
            "args": autoscaler_args(cluster_name),
            "env": [{"name": "AWS_REGION", "value": region}],
            "ports": [{"name": "http", "containerPort": 8085, "protocol": "TCP"}],
            "livenessProbe": {
                "httpGet": {"path": "/health-check", "port": "http"},
                "periodSeconds": 15,
                "failureThreshold": 4,
            },
            "readinessProbe": {
                "httpGet": {"path": "/health-check", "port": "http"},
                "periodSeconds": 15,
            },
            "resources": {
                "requests": {"cpu": "100m", "memory": "300Mi"},
                "limits": {"cpu": "500m", "memory": "600Mi"},
            },
            "securityContext": pods.container_security_context(),
        }
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=fields({**meta, "name": NAME, "annotations": CHECKOV_SKIPS}),
            spec=fields(
                {
                    "replicas": 1,
                    "selector": {"matchLabels": selector},
                    "template": {
                        "metadata": {"labels": meta["labels"], "annotations": CHECKOV_SKIPS},
                        "spec": {
                            "serviceAccountName": account.metadata.name,
                            "priorityClassName": "system-cluster-critical",
                            "securityContext": pods.pod_security_context(),
                            "containers": [container],
                            **pods.pool_placement(node_pool),
                        },
                    },
                }
            ),
            opts=child,
        )
        self.register_outputs({})
