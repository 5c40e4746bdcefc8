"""The Flask gateway on the gateway pool behind the stack's only public entry, an NLB."""

from __future__ import annotations

from collections.abc import Sequence
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

NAME = "gateway"
PORT = 9696
# /metrics lives only here (GATEWAY_METRICS_BIND), a port no Service exposes.
METRICS_PORT = 9697
METRICS_DIR = "/run/prometheus"
API_KEYS_DIR = "/etc/gateway/api-keys"
API_KEYS_FILE = f"{API_KEYS_DIR}/keys"
# The NLB checks targets every 10 s and needs 2 failures to stop sending new connections;
# the pod keeps serving that long after it is told to stop, then gunicorn gets its graceful
# timeout (GATEWAY_GRACEFUL_TIMEOUT_SECONDS, 30 s) to finish requests in flight.
PRE_STOP_SECONDS = 25
GRACEFUL_TIMEOUT_SECONDS = 30
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + GRACEFUL_TIMEOUT_SECONDS + 5


@dataclass(frozen=True)
class GatewaySizing:
    """One gateway pod: its container's CPU and memory, and the gunicorn processes in it."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    workers: int
    threads: int


# The one home of these numbers: the pod's resources, GATEWAY_WORKERS and GATEWAY_THREADS, and
# (through the downward API) GATEWAY_MEMORY_LIMIT_BYTES for the gateway's decode budget.
# Threads: downloads are I/O-bound, so a worker waits on many at once.
SIZING = GatewaySizing(
    cpu_request="250m",
    cpu_limit="1",
    memory_request="384Mi",
    memory_limit="768Mi",
    workers=2,
    threads=160,  # docs/scaling.md: CPU, not threads, limits a pod up to 1 s downloads
)

# The AWS cloud provider's own NLB (no load balancer controller to install): internet-facing,
# in the subnets tagged kubernetes.io/role/elb. Health checks keep the in-tree defaults for
# externalTrafficPolicy Local (HTTP on the healthCheckNodePort, every 10 s, 2 to change).
NLB_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
    "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled": "true",
}


def nlb_annotations(tls_certificate_arn: str | None) -> dict[str, str]:
    """The NLB's annotations; with a certificate it terminates TLS on 443 (plain TCP behind)."""
    annotations = dict(NLB_ANNOTATIONS)
    if tls_certificate_arn:
        annotations |= {
            "service.beta.kubernetes.io/aws-load-balancer-ssl-cert": tls_certificate_arn,
            "service.beta.kubernetes.io/aws-load-balancer-ssl-ports": "443",
            "service.beta.kubernetes.io/aws-load-balancer-backend-protocol": "tcp",
        }
    return annotations


def service_ports(tls: bool) -> list[dict[str, Any]]:
    """HTTPS on 443 only with a certificate (port 80 closed), else HTTP on 80."""
    if tls:
        return [{"name": "https", "port": 443, "targetPort": "http", "protocol": "TCP"}]
    return [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def gateway_env(
    tf_serving_target: pulumi.Input[str],
    model_name: str,
    *,
    api_keys: bool,
    canary_percent: float,
    shadow_percent: float,
) -> list[dict[str, Any]]:
    """The gateway's settings as environment variables."""
    env: list[dict[str, Any]] = [
        {"name": "TF_SERVING_HOST", "value": tf_serving_target},
        {"name": "GATEWAY_MODEL_NAME", "value": model_name},
        {"name": "GATEWAY_METRICS_BIND", "value": f"0.0.0.0:{METRICS_PORT}"},
        {"name": "PROMETHEUS_MULTIPROC_DIR", "value": METRICS_DIR},
        {"name": "GATEWAY_WORKERS", "value": str(SIZING.workers)},
        {"name": "GATEWAY_THREADS", "value": str(SIZING.threads)},
        {"name": "GATEWAY_GRACEFUL_TIMEOUT_SECONDS", "value": str(GRACEFUL_TIMEOUT_SECONDS)},
        {
            "name": "GATEWAY_MEMORY_LIMIT_BYTES",
            "valueFrom": {
                "resourceFieldRef": {
                    "containerName": "gateway",
                    "resource": "limits.memory",
                    "divisor": "1",
                }
            },
        },
        {"name": "GATEWAY_CANARY_PERCENT", "value": f"{canary_percent:g}"},
        {"name": "GATEWAY_SHADOW_PERCENT", "value": f"{shadow_percent:g}"},
    ]
    if api_keys:
        env.append({"name": "GATEWAY_API_KEYS_FILE", "value": API_KEYS_FILE})
    return env


def gateway_container(
    image: pulumi.Input[str],
    tf_serving_target: pulumi.Input[str],
    model_name: str,
    *,
    api_keys: bool = False,
    canary_percent: float = 0.0,
    shadow_percent: float = 0.0,
) -> dict[str, Any]:
    """The gateway container: where TF Serving is, health probes, draining, hardening."""
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir in the pod
        {"name": "prometheus", "mountPath": METRICS_DIR},
    ]
    if api_keys:
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
    return {
        "name": "gateway",
        "image": image,
        "imagePullPolicy": "Always",
        "ports": [
            {"name": "http", "containerPort": PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": gateway_env(
            tf_serving_target,
            model_name,
            api_keys=api_keys,
            canary_percent=canary_percent,
            shadow_percent=shadow_percent,
        ),
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
            "requests": {"cpu": SIZING.cpu_request, "memory": SIZING.memory_request},
            "limits": {"cpu": SIZING.cpu_limit, "memory": SIZING.memory_limit},
        },
        "securityContext": pods.container_security_context(),
        "volumeMounts": mounts,
    }


@dataclass(frozen=True)
class GatewayArgs:
    """What the gateway tier is deployed from."""

    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    tf_serving_target: pulumi.Input[str]
    model_name: str
    replicas: Replicas
    node_pool: str | None
    monitoring_namespace: str
    # The gateway's /readyz needs TF Serving, so its rollout waits as long as TF Serving's.
    rollout_seconds: int
    # Created after these (the TF Serving Deployment): pulumi-kubernetes does not wait for
    # pods behind a headless Service, so without it both would start and wait side by side.
    depends_on: Sequence[pulumi.Resource] = ()
    tls_certificate_arn: str | None = None
    # The API keys file's content (a secret Output); None: no keys required.
    api_keys_file: pulumi.Output[str] | None = None
    canary_percent: float = 0.0
    shadow_percent: float = 0.0
    pod_monitor: bool = False


class Gateway(pulumi.ComponentResource):
    """Gateway Deployment, LoadBalancer Service (NLB), HPA, PDB and NetworkPolicies."""

    url: pulumi.Output[str]
    service: k8s.core.v1.Service

    def __init__(
        self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("clothing:k8s:Gateway", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        api_keys = args.api_keys_file is not None
        volumes: list[dict[str, Any]] = [
            # werkzeug spools uploads over 500 KB here; the gateway reserves each upload's body
            # from its decode budget before parsing it, and all budgets together stay under the
            # memory limit, so /tmp never holds more than that (the kubelet evicts past it).
            {"name": "tmp", "emptyDir": {"sizeLimit": SIZING.memory_limit}},
            {"name": "prometheus", "emptyDir": {"medium": "Memory", "sizeLimit": "32Mi"}},
        ]
        if args.api_keys_file is not None:
            secret = k8s.core.v1.Secret(
                f"{name}-api-keys",
                metadata=fields(
                    {
                        "name": "gateway-api-keys",
                        "namespace": args.namespace,
                        "labels": pods.app_labels(NAME, "gateway"),
                    }
                ),
                type="Opaque",
                string_data={"keys": args.api_keys_file},
                opts=child,
            )
            volumes.append(
                {
                    "name": "api-keys",
                    "secret": {
                        "secretName": secret.metadata.name,
                        "items": [{"key": "keys", "path": "keys"}],
                        # Read by the gateway's group (the pod's fsGroup) only.
                        "defaultMode": 0o440,
                    },
                }
            )
        workload = deploy_workload(
            name,
            WorkloadArgs(
                name=NAME,
                component="gateway",
                namespace=args.namespace,
                containers=[
                    gateway_container(
                        args.image,
                        args.tf_serving_target,
                        args.model_name,
                        api_keys=api_keys,
                        canary_percent=args.canary_percent,
                        shadow_percent=args.shadow_percent,
                    )
                ],
                volumes=volumes,
                node_pool=args.node_pool,
                replicas=args.replicas,
                grace_seconds=TERMINATION_GRACE_SECONDS,
                rollout_seconds=args.rollout_seconds,
                pod_annotations={
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics",
                },
                depends_on=args.depends_on,
            ),
            parent=self,
        )
        tls = bool(args.tls_certificate_arn)
        self.service = k8s.core.v1.Service(
            f"{name}-lb",
            metadata=fields(
                {
                    "name": NAME,
                    "namespace": args.namespace,
                    "labels": workload.meta_labels,
                    "annotations": nlb_annotations(args.tls_certificate_arn),
                }
            ),
            spec=fields(
                {
                    "type": "LoadBalancer",
                    # Only nodes running a gateway pod pass the NLB health check, so a draining
                    # pod's node leaves the target set; the client address is kept too.
                    "externalTrafficPolicy": "Local",
                    "selector": workload.selector,
                    "ports": service_ports(tls),
                }
            ),
            # The Service waits for ready gateway pods (provider/pkg/await/service.go), which
            # wait for TF Serving: same deadline as the Deployment.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[workload.deployment],
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{args.rollout_seconds + 300}s",
                    update=f"{args.rollout_seconds + 300}s",
                ),
            ),
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=fields(
                {
                    "name": f"{NAME}-ingress",
                    "namespace": args.namespace,
                    "labels": workload.meta_labels,
                }
            ),
            spec=fields(
                {
                    "podSelector": {"matchLabels": workload.selector},
                    "policyTypes": ["Ingress"],
                    # From anywhere, but only to the HTTP port: the NLB keeps client addresses.
                    "ingress": [{"ports": [{"protocol": "TCP", "port": PORT}]}],
                }
            ),
            opts=child,
        )
        scraping_policy(
            f"{name}-metrics",
            workload=workload,
            namespace=args.namespace,
            monitoring_namespace=args.monitoring_namespace,
            port=METRICS_PORT,
            parent=self,
        )
        if args.pod_monitor:
            pod_monitor(
                f"{name}-pod-monitor",
                workload=workload,
                namespace=args.namespace,
                port_name="metrics",
                path="/metrics",
                parent=self,
            )
        scheme = "https" if tls else "http"
        ingress = self.service.status.load_balancer.ingress
        self.url = ingress.apply(
            lambda points: f"{scheme}://{points[0].hostname or points[0].ip}/predict"
        )
        self.register_outputs({"url": self.url})
