"""Where the workloads run: a new EKS cluster of ours, or an existing cluster's kubeconfig."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from clothing_infra.autoscaler import ClusterAutoscaler
from clothing_infra.cluster import Cluster, ClusterArgs
from clothing_infra.gpu import NvidiaDevicePlugin
from clothing_infra.network import Network
from clothing_infra.pods import GATEWAY_POOL, MODEL_POOL
from clothing_infra.settings import Settings, admins_exclude_deployer


@dataclass(frozen=True)
class Target:
    """A Kubernetes provider and how to place pods on its nodes."""

    provider: k8s.Provider
    kubeconfig: pulumi.Output[str]
    # None in an existing cluster, which is not ours to name.
    cluster_name: pulumi.Output[str] | None
    # Node pool per tier; None: the pods are not pinned (an existing cluster's own nodes).
    gateway_pool: str | None
    model_pool: str | None


def new_cluster(settings: Settings) -> Target:
    """A VPC, an EKS cluster with a gateway and a model pool, and the cluster add-ons."""
    admins_exclude_deployer(settings.admin_role_arns, aws.get_caller_identity().arn)
    network = Network(
        "network",
        cidr=settings.vpc_cidr,
        az_count=settings.availability_zone_count,
        cluster_name=settings.cluster_name,
    )
    cluster = Cluster(
        "cluster",
        ClusterArgs(
            cluster_name=settings.cluster_name,
            kubernetes_version=settings.kubernetes_version,
            vpc_id=network.vpc_id,
            public_subnet_ids=network.public_subnet_ids,
            private_subnet_ids=network.private_subnet_ids,
            api_public_access_cidrs=settings.api_public_access_cidrs,
            admin_role_arns=settings.admin_role_arns,
            node_capacity_type=settings.node_capacity_type,
            gateway_pool=settings.gateway_pool,
            model_pool=settings.model_pool,
            gpu=settings.gpu,
            aws_profile=pulumi.Config("aws").get("profile"),
            tags={"Project": settings.project, "Stack": settings.stack},
        ),
    )
    # Every Kubernetes object uses this provider, and the provider waits for the nodes and
    # the add-ons pods need. So objects are created once pods can run, and `pulumi destroy`
    # deletes them (the gateway Service, and with it its NLB) before the nodes, the cluster
    # and the VPC.
    provider = k8s.Provider(
        "cluster",
        kubeconfig=cluster.kubeconfig_json,
        opts=pulumi.ResourceOptions(depends_on=cluster.ready_for_workloads),
    )
    on_cluster = pulumi.ResourceOptions(provider=provider)
    ClusterAutoscaler(
        "cluster-autoscaler",
        cluster_name=settings.cluster_name,
        region=settings.region,
        image=settings.cluster_autoscaler_image,
        node_pool=GATEWAY_POOL,
        opts=on_cluster,
    )
    if settings.gpu:
        NvidiaDevicePlugin("nvidia-device-plugin", node_pool=MODEL_POOL, opts=on_cluster)
    return Target(
        provider=provider,
        kubeconfig=cluster.kubeconfig_json,
        cluster_name=cluster.name,
        gateway_pool=GATEWAY_POOL,
        model_pool=MODEL_POOL,
    )


def existing_cluster(kubeconfig: pulumi.Output[str]) -> Target:
    """Someone else's cluster: no VPC, nodes or autoscaler of ours, pods not pinned to pools.

    That cluster must bring metrics-server (for the HPAs) and, with gpu=true, GPU support.
    """
    provider = k8s.Provider("existing-cluster", kubeconfig=kubeconfig)
    return Target(
        provider=provider,
        kubeconfig=kubeconfig,
        cluster_name=None,
        gateway_pool=None,
        model_pool=None,
    )


def deployment_target(settings: Settings, kubeconfig: pulumi.Output[str] | None) -> Target:
    """The existing cluster when a kubeconfig is configured, else a new one."""
    if kubeconfig is not None:
        return existing_cluster(kubeconfig)
    return new_cluster(settings)
