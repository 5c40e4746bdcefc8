"""The Flask gateway on the gateway pool behind the stack's only public entry, an NLB."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from clothing_infra import labels
from clothing_infra.labels import fields
from clothing_infra.scaling import autoscale_and_protect

NAME = "gateway"
PORT = 9696
METRICS_DIR = "/run/prometheus"
# The NLB checks targets every 10 s and needs 2 failures to stop sending new connections;
# the pod keeps serving that long after it is told to stop, then gunicorn gets its graceful
# timeout (GATEWAY_GRACEFUL_TIMEOUT_SECONDS, 30 s) to finish requests in flight.
PRE_STOP_SECONDS = 25
TERMINATION_GRACE_SECONDS = 60

# The AWS cloud provider's own NLB (no load balancer controller to install): internet-facing,
# in the subnets tagged kubernetes.io/role/elb.
NLB_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
    "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled": "true",
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval": "10",
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-unhealthy-threshold": "2",
    "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold": "2",
}


def gateway_container(
    image: pulumi.Input[str], tf_serving_target: pulumi.Input[str], model_name: str
) -> dict[str, Any]:
    """The gateway container: where TF Serving is, health probes, draining, hardening."""
    return {
        "name": "gateway",
        "image": image,
        "imagePullPolicy": "Always",
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": "TF_SERVING_HOST", "value": tf_serving_target},
            {"name": "GATEWAY_MODEL_NAME", "value": model_name},
            {"name": "PROMETHEUS_MULTIPROC_DIR", "value": METRICS_DIR},
        ],
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "resources": {
            # Two gunicorn workers with numpy, Pillow and gRPC loaded, plus decoded photos.
            "requests": {"cpu": "250m", "memory": "384Mi"},
            "limits": {"cpu": "1", "memory": "768Mi"},
        },
        "securityContext": labels.container_security_context(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir in the pod
            {"name": "prometheus", "mountPath": METRICS_DIR},
        ],
    }


class Gateway(pulumi.ComponentResource):
    """Gateway Deployment, LoadBalancer Service (NLB, port 80), HPA, PDB and NetworkPolicy."""

    url: pulumi.Output[str]
    service: k8s.core.v1.Service

    def __init__(
        self,
        name: str,
        *,
        namespace: pulumi.Input[str],
        image: pulumi.Input[str],
        tf_serving_target: pulumi.Input[str],
        model_name: str,
        min_replicas: int,
        max_replicas: int,
        node_pool: str | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:k8s:Gateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        meta_labels = labels.app_labels(NAME, "gateway")
        selector = labels.selector_labels(NAME)

        account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=fields({"name": NAME, "namespace": namespace, "labels": meta_labels}),
            automount_service_account_token=False,
            opts=child,
        )
        pod_spec = labels.restricted_pod_spec(
            NAME,
            account.metadata.name,
            TERMINATION_GRACE_SECONDS,
            [gateway_container(image, tf_serving_target, model_name)],
            [
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                {"name": "prometheus", "emptyDir": {"medium": "Memory", "sizeLimit": "32Mi"}},
            ],
            node_pool,
        )
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=fields({"name": NAME, "namespace": namespace, "labels": meta_labels}),
            spec=fields(
                {
                    # No `replicas`: the HorizontalPodAutoscaler owns the count.
                    "selector": {"matchLabels": selector},
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                    },
                    "template": {"metadata": {"labels": meta_labels}, "spec": pod_spec},
                }
            ),
            opts=child,
        )
        self.service = k8s.core.v1.Service(
            f"{name}-lb",
            metadata=fields(
                {
                    "name": NAME,
                    "namespace": namespace,
                    "labels": meta_labels,
                    "annotations": NLB_ANNOTATIONS,
                }
            ),
            spec=fields(
                {
                    "type": "LoadBalancer",
                    # Only nodes running a gateway pod pass the NLB health check, so a draining
                    # pod's node leaves the target set; the client address is kept too.
                    "externalTrafficPolicy": "Local",
                    "selector": selector,
                    "ports": [
                        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
                    ],
                }
            ),
            opts=child,
        )
        autoscale_and_protect(
            name,
            deployment=deployment,
            workload=NAME,
            namespace=namespace,
            meta_labels=meta_labels,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            parent=self,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=fields(
                {"name": f"{NAME}-ingress", "namespace": namespace, "labels": meta_labels}
            ),
            spec=fields(
                {
                    "podSelector": {"matchLabels": selector},
                    "policyTypes": ["Ingress"],
                    # From anywhere, but only to the HTTP port: the NLB keeps client addresses.
                    "ingress": [{"ports": [{"protocol": "TCP", "port": PORT}]}],
                }
            ),
            opts=child,
        )
        ingress = self.service.status.load_balancer.ingress
        self.url = ingress.apply(
            lambda points: f"http://{points[0].hostname or points[0].ip}/predict"
        )
        self.register_outputs({"url": self.url})
