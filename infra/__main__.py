"""Deploy the clothing classifier: VPC, EKS, ECR images, TF Serving and the gateway."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
from clothing_infra.autoscaler import ClusterAutoscaler
from clothing_infra.cluster import Cluster
from clothing_infra.gateway import Gateway
from clothing_infra.gpu import NvidiaDevicePlugin
from clothing_infra.images import Images
from clothing_infra.labels import GATEWAY_POOL, MODEL_POOL, selector_labels
from clothing_infra.model_serving import ModelServing
from clothing_infra.namespace import AppNamespace
from clothing_infra.network import Network
from clothing_infra.settings import load_settings

settings, existing_kubeconfig = load_settings()
images = Images("images", settings)

cluster_name: pulumi.Input[str | None]
if existing_kubeconfig is not None:
    # Deploy into a cluster someone else runs: no VPC, nodes or autoscaler of ours, so pods
    # are not pinned to pools (and the cluster must bring metrics-server and GPU support).
    kubeconfig: pulumi.Output[str] = existing_kubeconfig
    cluster_name = None
    gateway_pool: str | None = None
    model_pool: str | None = None
    provider = k8s.Provider("existing-cluster", kubeconfig=kubeconfig)
else:
    network = Network(
        "network",
        cidr=settings.vpc_cidr,
        az_count=settings.availability_zone_count,
        cluster_name=settings.cluster_name,
    )
    cluster = Cluster(
        "cluster",
        settings,
        vpc_id=network.vpc_id,
        public_subnet_ids=network.public_subnet_ids,
        private_subnet_ids=network.private_subnet_ids,
    )
    kubeconfig = cluster.kubeconfig_json
    cluster_name = cluster.name
    gateway_pool, model_pool = GATEWAY_POOL, MODEL_POOL
    # Every Kubernetes object uses this provider, and the provider waits for the nodes and
    # add-ons. So objects are created once pods can run, and `pulumi destroy` deletes them
    # (the gateway Service, and with it its NLB) before the nodes, the cluster and the VPC.
    provider = k8s.Provider(
        "cluster",
        kubeconfig=kubeconfig,
        opts=pulumi.ResourceOptions(depends_on=[*cluster.node_groups, *cluster.addons]),
    )
    ClusterAutoscaler(
        "cluster-autoscaler",
        cluster_name=settings.cluster_name,
        region=settings.region,
        image=settings.cluster_autoscaler_image,
        node_pool=GATEWAY_POOL,
        opts=pulumi.ResourceOptions(provider=provider),
    )
    if settings.gpu:
        NvidiaDevicePlugin(
            "nvidia-device-plugin",
            node_pool=MODEL_POOL,
            opts=pulumi.ResourceOptions(provider=provider),
        )

on_cluster = pulumi.ResourceOptions(provider=provider)
namespace = AppNamespace(
    "namespace",
    namespace=settings.namespace,
    kubernetes_version=settings.kubernetes_version,
    opts=on_cluster,
)
model_serving = ModelServing(
    "model-serving",
    namespace=namespace.name,
    image=images.model_image,
    model_name=settings.model_name,
    gpu=settings.gpu,
    min_replicas=settings.model_replicas.min,
    max_replicas=settings.model_replicas.max,
    node_pool=model_pool,
    gateway_selector=selector_labels("gateway"),
    opts=on_cluster,
)
gateway = Gateway(
    "gateway",
    namespace=namespace.name,
    image=images.gateway_image,
    tf_serving_target=model_serving.grpc_target,
    model_name=settings.model_name,
    min_replicas=settings.gateway_replicas.min,
    max_replicas=settings.gateway_replicas.max,
    node_pool=gateway_pool,
    opts=on_cluster,
)

pulumi.export("gateway_url", gateway.url)
pulumi.export("cluster_name", cluster_name)
pulumi.export("kubeconfig", pulumi.Output.secret(kubeconfig))
pulumi.export("namespace", namespace.name)
pulumi.export("model_repository_url", images.model_repository_url)
pulumi.export("gateway_repository_url", images.gateway_repository_url)
pulumi.export("model_image", images.model_image)
pulumi.export("gateway_image", images.gateway_image)
