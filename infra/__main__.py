"""Deploy the clothing classifier: VPC, EKS, ECR images, TF Serving and the gateway."""

from __future__ import annotations

import pulumi
from clothing_infra.gateway import Gateway, GatewayArgs
from clothing_infra.images import Images, ImagesArgs
from clothing_infra.model_serving import (
    ROLLOUT_SECONDS,
    ModelServing,
    ModelServingArgs,
    model_server_config,
)
from clothing_infra.namespace import AppNamespace
from clothing_infra.pods import selector_labels
from clothing_infra.settings import load_settings, preview_warnings
from clothing_infra.target import deployment_target

settings, secrets = load_settings()
for warning in preview_warnings(settings, existing_cluster=secrets.kubeconfig is not None):
    pulumi.log.warn(warning)

images = Images(
    "images",
    ImagesArgs(
        repository_prefix=f"{settings.project}-{settings.stack}".lower(),
        tf_serving_tag=settings.tf_serving_tag,
        model_name=settings.model_name,
        model_path=settings.model_path,
        model_config=model_server_config(
            settings.model_name, settings.stable_version, settings.canary_version
        ),
        canary_model_path=settings.canary_model_path,
    ),
)
target = deployment_target(settings, secrets.kubeconfig)
on_cluster = pulumi.ResourceOptions(provider=target.provider)

namespace = AppNamespace(
    "namespace",
    namespace=settings.namespace,
    kubernetes_version=settings.kubernetes_version,
    opts=on_cluster,
)
model_serving = ModelServing(
    "model-serving",
    ModelServingArgs(
        namespace=namespace.name,
        image=images.model_image,
        model_name=settings.model_name,
        gpu=settings.gpu,
        replicas=settings.model_replicas,
        node_pool=target.model_pool,
        gateway_selector=selector_labels("gateway"),
        monitoring_namespace=settings.monitoring_namespace,
        pod_monitor=settings.pod_monitor,
    ),
    opts=on_cluster,
)
gateway = Gateway(
    "gateway",
    GatewayArgs(
        namespace=namespace.name,
        image=images.gateway_image,
        tf_serving_target=model_serving.grpc_target,
        model_name=settings.model_name,
        replicas=settings.gateway_replicas,
        node_pool=target.gateway_pool,
        monitoring_namespace=settings.monitoring_namespace,
        rollout_seconds=ROLLOUT_SECONDS,
        depends_on=[model_serving.deployment],
        tls_certificate_arn=settings.tls_certificate_arn,
        api_keys_file=secrets.api_keys_file,
        canary_percent=settings.canary_percent,
        shadow_percent=settings.shadow_percent,
        pod_monitor=settings.pod_monitor,
    ),
    opts=on_cluster,
)

kubeconfig: pulumi.Output[str] = pulumi.Output.secret(target.kubeconfig)
# Read by clothing_infra.declared (the program under mocks) as well as exported.
stack_outputs: dict[str, object] = {
    "gateway_url": gateway.url,
    "cluster_name": target.cluster_name,
    "kubeconfig": kubeconfig,
    "namespace": namespace.name,
    "model_repository_url": images.model_repository_url,
    "gateway_repository_url": images.gateway_repository_url,
    "model_image": images.model_image,
    "gateway_image": images.gateway_image,
}
for key, value in stack_outputs.items():
    pulumi.export(key, value)
