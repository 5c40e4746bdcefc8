"""TF Serving on the model pool behind a headless Service only the gateway may reach."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from clothing_infra import labels
from clothing_infra.labels import fields
from clothing_infra.scaling import autoscale_and_protect

NAME = "tf-serving"
HEADLESS_SERVICE = "tf-serving-headless"
GRPC_PORT = 8500
REST_PORT = 8501
CONFIG_DIR = "/etc/tfserving"
ROLLOUT_SECONDS = 1200


def tf_serving_args(model_name: str) -> list[str]:
    """tensorflow_model_server flags: both APIs, batching, Prometheus metrics, the baked model."""
    return [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_name={model_name}",
        f"--model_base_path=/models/{model_name}",
        "--enable_batching",
        f"--batching_parameters_file={CONFIG_DIR}/batching_parameters.txt",
        f"--monitoring_config_file={CONFIG_DIR}/monitoring.config",
        # The model is baked into the image: look for versions once, then stop polling.
        "--file_system_poll_wait_seconds=0",
    ]


def tf_serving_container(image: pulumi.Input[str], model_name: str, gpu: bool) -> dict[str, Any]:
    """The TF Serving container: probes that follow the model's state, resources, hardening."""
    # TF Serving answers /v1/models/<name>/metadata only from a loaded servable, i.e. once
    # the model is AVAILABLE (warm-up done); while loading, or after a failed load, it
    # returns an error status. An httpGet probe on it therefore reflects AVAILABLE without
    # parsing JSON and without a shell in the image. (TF Serving has no grpc.health.v1, so a
    # grpc probe would always fail.)
    model_ready = {"httpGet": {"path": f"/v1/models/{model_name}/metadata", "port": "http"}}
    limits: dict[str, str] = {"cpu": "2", "memory": "4Gi" if gpu else "2Gi"}
    if gpu:
        limits["nvidia.com/gpu"] = "1"
    return {
        "name": "tf-serving",
        "image": image,
        "imagePullPolicy": "Always",
        "command": ["/usr/bin/tensorflow_model_server"],
        "args": tf_serving_args(model_name),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
        ],
        # Loading and warming the model may take minutes on a cold node: 60 x 5 s.
        "startupProbe": {**model_ready, "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {
            **model_ready,
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "grpc"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # The gateway resolves the headless Service again when a connection drops; give it
        # time to do so before the server stops accepting requests.
        "lifecycle": {"preStop": {"sleep": {"seconds": 10}}},
        "resources": {
            "requests": {"cpu": "750m", "memory": "2Gi" if gpu else "1Gi"},
            "limits": limits,
        },
        "securityContext": labels.container_security_context(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir in the pod
        ],
    }


class ModelServing(pulumi.ComponentResource):
    """TF Serving Deployment, headless Service, HPA, PDB and the gateway-only NetworkPolicy."""

    grpc_target: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        namespace: pulumi.Input[str],
        image: pulumi.Input[str],
        model_name: str,
        gpu: bool,
        min_replicas: int,
        max_replicas: int,
        node_pool: str | None,
        gateway_selector: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:k8s:ModelServing", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        meta_labels = labels.app_labels(NAME, "model-server")
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
            30,
            [tf_serving_container(image, model_name, gpu)],
            [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
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
                    # A new pod may wait for the autoscaler to add a node, then pull a large
                    # image (GBs with CUDA) and load the model.
                    "progressDeadlineSeconds": ROLLOUT_SECONDS,
                    "template": {"metadata": {"labels": meta_labels}, "spec": pod_spec},
                }
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{ROLLOUT_SECONDS + 300}s", update=f"{ROLLOUT_SECONDS + 300}s"
                ),
            ),
        )
        service = k8s.core.v1.Service(
            f"{name}-headless",
            metadata=fields(
                {"name": HEADLESS_SERVICE, "namespace": namespace, "labels": meta_labels}
            ),
            spec=fields(
                {
                    # Headless: DNS returns every ready pod, so the gateway's gRPC client can
                    # balance per request (round_robin) instead of pinning one connection.
                    "type": "ClusterIP",
                    "clusterIP": "None",
                    "selector": selector,
                    "ports": [
                        {
                            "name": "grpc",
                            "port": GRPC_PORT,
                            "targetPort": "grpc",
                            "appProtocol": "grpc",
                        },
                        {"name": "http", "port": REST_PORT, "targetPort": "http"},
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
            f"{name}-from-gateway",
            metadata=fields(
                {
                    "name": f"{NAME}-from-gateway",
                    "namespace": namespace,
                    "labels": meta_labels,
                }
            ),
            spec=fields(
                {
                    "podSelector": {"matchLabels": selector},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": gateway_selector}}],
                            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
                        }
                    ],
                }
            ),
            opts=child,
        )
        self.grpc_target = pulumi.Output.concat(
            "dns:///", service.metadata.name, ".", service.metadata.namespace,
            f".svc.cluster.local:{GRPC_PORT}",
        )  # fmt: skip
        self.register_outputs({"grpc_target": self.grpc_target})
