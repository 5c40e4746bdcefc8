"""NVIDIA device plugin: advertises the GPUs of the model pool as `nvidia.com/gpu`."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from clothing_infra import pods
from clothing_infra.pods import fields

NAME = "nvidia-device-plugin"
IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.18.2"
EXEMPTION_ANNOTATION = "clothing-serving/pod-security-exemption"
EXEMPTION_REASON = (
    "A device plugin registers with the kubelet through the host's "
    "/var/lib/kubelet/device-plugins socket, so it needs that hostPath; it runs in "
    "kube-system, never in the application namespace."
)
ANNOTATIONS = {
    EXEMPTION_ANNOTATION: EXEMPTION_REASON,
    # checkov reads skips from annotations, "<check id>=<reason>", one key per check.
    "checkov.io/skip1": "CKV_K8S_43=Upstream release tag of nvcr.io; pin the digest you "
    "have verified before production use",
    "checkov.io/skip2": "CKV_K8S_23=Runs as root to create its socket in the root-owned "
    "kubelet directory",
    "checkov.io/skip3": "CKV_K8S_8=Serves no health endpoint; the kubelet drops the plugin "
    "when its socket goes away",
    "checkov.io/skip4": "CKV_K8S_9=Serves no traffic, so there is nothing to be ready for",
    "checkov.io/skip5": "CKV_K8S_40=Runs as root (UID 0) for the same reason as CKV_K8S_23",
}


class NvidiaDevicePlugin(pulumi.ComponentResource):
    """DaemonSet on the (tainted) model pool; the EKS NVIDIA AMI brings driver and toolkit."""

    def __init__(
        self, name: str, *, node_pool: str, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("clothing:k8s:NvidiaDevicePlugin", name, None, opts)
        meta_labels = pods.app_labels(NAME, "device-plugin")
        k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata=fields(
                {
                    "name": NAME,
                    "namespace": "kube-system",
                    "labels": meta_labels,
                    "annotations": ANNOTATIONS,
                }
            ),
            spec=fields(
                {
                    "selector": {"matchLabels": pods.selector_labels(NAME)},
                    "updateStrategy": {"type": "RollingUpdate"},
                    "template": {
                        "metadata": {"labels": meta_labels, "annotations": ANNOTATIONS},
                        "spec": {
                            "priorityClassName": "system-node-critical",
                            "automountServiceAccountToken": False,
                            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                            **pods.pool_placement(node_pool),
                            "containers": [
                                {
                                    "name": "nvidia-device-plugin",
                                    "image": IMAGE,
                                    "imagePullPolicy": "Always",
                                    "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]},
                                    },
                                    "resources": {
                                        "requests": {"cpu": "50m", "memory": "64Mi"},
                                        "limits": {"cpu": "200m", "memory": "128Mi"},
                                    },
                                    "volumeMounts": [
                                        {
                                            "name": "device-plugin",
                                            "mountPath": "/var/lib/kubelet/device-plugins",
                                        }
                                    ],
                                }
                            ],
                            "volumes": [
                                {
                                    "name": "device-plugin",
                                    "hostPath": {"path": "/var/lib/kubelet/device-plugins"},
                                }
                            ],
                        },
                    },
                }
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
