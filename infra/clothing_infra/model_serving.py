"""TF Serving on the model pool behind a headless Service only the gateway may reach."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from clothing_infra import pods
from clothing_infra.pods import fields
from clothing_infra.settings import Replicas
from clothing_infra.workload import (
    WorkloadArgs,
    deploy_workload,
    pod_monitor,
    scraping_policy,
)

NAME = "tf-serving"
HEADLESS_SERVICE = "tf-serving-headless"
GRPC_PORT = 8500
REST_PORT = 8501
CONFIG_DIR = "/etc/tfserving"
# Written into the model image by services/model/Dockerfile from the MODEL_CONFIG build arg.
MODEL_CONFIG_FILE = f"{CONFIG_DIR}/models.config"
# services/model/monitoring.config: Prometheus metrics on the REST port.
METRICS_PATH = "/monitoring/prometheus/metrics"
MODELS_DIR = "/models"
STABLE_LABEL = "stable"
CANARY_LABEL = "canary"
ROLLOUT_SECONDS = 1200
# tini from the image (services/model/Dockerfile): as PID 1 TF Serving would ignore SIGTERM,
# since nothing in tensorflow_serving/model_servers installs a handler; under tini the
# signal's default action ends it.
INIT = ["/usr/bin/tini", "--"]
SERVER = "/usr/bin/tensorflow_model_server"

# The drain sequence of a model pod. TF Serving ends every gRPC connection after at most
# MAX_CONNECTION_AGE_MS + MAX_CONNECTION_AGE_GRACE_MS, so the gateways' round_robin channels
# resolve the headless Service again (grpc/grpc issue 12295): new pods get traffic and a
# terminating pod loses it. A terminating pod leaves DNS at once, but CoreDNS may answer
# from its cache for up to DNS_CACHE_SECONDS (EKS's Corefile: `cache 30`). The preStop sleep
# covers all three, so no request is in flight when SIGTERM arrives.
MAX_CONNECTION_AGE_MS = 30_000
MAX_CONNECTION_AGE_GRACE_MS = 10_000
DNS_CACHE_SECONDS = 30
PRE_STOP_SECONDS = (
    (MAX_CONNECTION_AGE_MS + MAX_CONNECTION_AGE_GRACE_MS) // 1000 + DNS_CACHE_SECONDS + 5
)
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + 15


@dataclass(frozen=True)
class ModelResources:
    """The TF Serving container's CPU and memory."""

    cpu_request: str
    cpu_limit: int
    memory_request: str
    memory_limit: str


CPU_RESOURCES = ModelResources(
    cpu_request="750m", cpu_limit=2, memory_request="1Gi", memory_limit="2Gi"
)
GPU_RESOURCES = ModelResources(
    cpu_request="750m", cpu_limit=2, memory_request="2Gi", memory_limit="4Gi"
)


def model_server_config(model_name: str, stable: int, canary: int | None) -> str:
    """ModelServerConfig text proto: the stable (and canary) version, each with its label.

    Without a canary, `canary` names the stable version too, so a gateway still sending a
    share to `canary` (during a promotion's rollout) gets an answer from every pod.
    """
    versions = [stable] if canary is None else [stable, canary]
    version_lines = "".join(f"        versions: {version}\n" for version in versions)
    return (
        "model_config_list {\n"
        "  config {\n"
        f'    name: "{model_name}"\n'
        f'    base_path: "{MODELS_DIR}/{model_name}"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy {\n"
        "      specific {\n"
        f"{version_lines}"
        "      }\n"
        "    }\n"
        f'    version_labels {{ key: "{STABLE_LABEL}" value: {stable} }}\n'
        f'    version_labels {{ key: "{CANARY_LABEL}" value: {canary or stable} }}\n'
        "  }\n"
        "}\n"
    )


def tf_serving_args(cpu_threads: int) -> list[str]:
    """tensorflow_model_server flags: both APIs, the baked-in models, batching, drain, metrics."""
    return [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={MODEL_CONFIG_FILE}",
        # The config labels its versions from the start; TF Serving assigns labels before the
        # first load (ServerCore::ReloadConfig, model_servers/server_core.cc) and refuses to
        # start with FAILED_PRECONDITION without this flag (g3doc/serving_config.md).
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_batching",
        f"--batching_parameters_file={CONFIG_DIR}/batching_parameters.txt",
        f"--monitoring_config_file={CONFIG_DIR}/monitoring.config",
        # The models are baked into the image: look for versions once, then stop polling.
        "--file_system_poll_wait_seconds=0",
        # A baked-in model that fails to load fails the same way again: exit with one clear
        # log line instead of retrying 5 times a minute apart.
        "--max_num_load_retries=0",
        # TF Serving sizes its thread pools from the node's cores, not the cgroup's limit.
        f"--tensorflow_intra_op_parallelism={cpu_threads}",
        f"--tensorflow_inter_op_parallelism={cpu_threads}",
        "--grpc_channel_arguments="
        f"grpc.max_connection_age_ms={MAX_CONNECTION_AGE_MS},"
        f"grpc.max_connection_age_grace_ms={MAX_CONNECTION_AGE_GRACE_MS}",
    ]


def tf_serving_container(image: pulumi.Input[str], model_name: str, gpu: bool) -> dict[str, Any]:
    """The TF Serving container: probes that follow the model's state, resources, hardening."""
    # TF Serving opens its ports only once ServerCore::Create has loaded the models
    # (tensorflow_serving/model_servers/server.cc, Server::BuildAndStart): while loading, the
    # probe's connection is refused; after a failed load (no retries) the process exits. Once
    # up, /v1/models/<name>/metadata answers from the loaded servable: an httpGet probe on it
    # follows AVAILABLE without parsing JSON and without a shell in the image.
    model_ready = {"httpGet": {"path": f"/v1/models/{model_name}/metadata", "port": "http"}}
    sizes = GPU_RESOURCES if gpu else CPU_RESOURCES
    limits: dict[str, str] = {"cpu": str(sizes.cpu_limit), "memory": sizes.memory_limit}
    if gpu:
        limits["nvidia.com/gpu"] = "1"
    return {
        "name": "tf-serving",
        "image": image,
        "imagePullPolicy": "Always",
        "command": [*INIT, SERVER],
        "args": tf_serving_args(sizes.cpu_limit),
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
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "resources": {
            "requests": {"cpu": sizes.cpu_request, "memory": sizes.memory_request},
            "limits": limits,
        },
        "securityContext": pods.container_security_context(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir in the pod
        ],
    }


@dataclass(frozen=True)
class ModelServingArgs:
    """What the model tier is deployed from."""

    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    model_name: str
    gpu: bool
    replicas: Replicas
    node_pool: str | None
    gateway_selector: Mapping[str, str]
    monitoring_namespace: str
    pod_monitor: bool = False


class ModelServing(pulumi.ComponentResource):
    """TF Serving Deployment, headless Service, HPA, PDB and the NetworkPolicies."""

    grpc_target: pulumi.Output[str]
    deployment: k8s.apps.v1.Deployment

    def __init__(
        self, name: str, args: ModelServingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("clothing:k8s:ModelServing", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        workload = deploy_workload(
            name,
            WorkloadArgs(
                name=NAME,
                component="model-server",
                namespace=args.namespace,
                containers=[tf_serving_container(args.image, args.model_name, args.gpu)],
                volumes=[{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                node_pool=args.node_pool,
                replicas=args.replicas,
                grace_seconds=TERMINATION_GRACE_SECONDS,
                # A new pod may wait for the autoscaler to add a node, then pull a large image
                # (GBs with CUDA) and load the model.
                rollout_seconds=ROLLOUT_SECONDS,
                pod_annotations={
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(REST_PORT),
                    "prometheus.io/path": METRICS_PATH,
                },
            ),
            parent=self,
        )
        self.deployment = workload.deployment
        service = k8s.core.v1.Service(
            f"{name}-headless",
            metadata=fields(
                {
                    "name": HEADLESS_SERVICE,
                    "namespace": args.namespace,
                    "labels": workload.meta_labels,
                }
            ),
            spec=fields(
                {
                    # Headless: DNS returns every ready pod, so the gateway's gRPC client can
                    # balance per request (round_robin) instead of pinning one connection.
                    "type": "ClusterIP",
                    "clusterIP": "None",
                    "selector": workload.selector,
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
        k8s.networking.v1.NetworkPolicy(
            f"{name}-from-gateway",
            metadata=fields(
                {
                    "name": f"{NAME}-from-gateway",
                    "namespace": args.namespace,
                    "labels": workload.meta_labels,
                }
            ),
            spec=fields(
                {
                    "podSelector": {"matchLabels": workload.selector},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": dict(args.gateway_selector)}}],
                            "ports": [{"protocol": "TCP", "port": GRPC_PORT}],
                        }
                    ],
                }
            ),
            opts=child,
        )
        scraping_policy(
            f"{name}-metrics",
            workload=workload,
            namespace=args.namespace,
            monitoring_namespace=args.monitoring_namespace,
            port=REST_PORT,
            parent=self,
        )
        if args.pod_monitor:
            pod_monitor(
                f"{name}-pod-monitor",
                workload=workload,
                namespace=args.namespace,
                port_name="http",
                path=METRICS_PATH,
                parent=self,
            )
        self.grpc_target = pulumi.Output.concat(
            "dns:///", service.metadata.name, ".", service.metadata.namespace,
            f".svc.cluster.local:{GRPC_PORT}",
        )  # fmt: skip
        self.register_outputs({"grpc_target": self.grpc_target})
