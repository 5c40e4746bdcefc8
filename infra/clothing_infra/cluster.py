"""The EKS cluster: control plane, two managed node groups, add-ons and the autoscaler's IAM."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks

from clothing_infra.labels import GATEWAY_POOL, MODEL_POOL, POOL_LABEL
from clothing_infra.settings import NodePool, Settings

AUTOSCALER_NAMESPACE = "kube-system"
AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"

_NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
)
_CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
_CONTROL_PLANE_LOGS = ["api", "audit", "authenticator"]


def node_launch_template_args(pool: str, cluster_name: str, volume_gib: int) -> dict[str, Any]:
    """Launch template settings: IMDSv2 only, one hop (pods cannot reach it), encrypted disk."""
    tags = {"Name": f"{cluster_name}-{pool}", POOL_LABEL: pool}
    return {
        "description": f"{cluster_name} {pool} nodes",
        "update_default_version": True,
        "metadata_options": {
            "http_endpoint": "enabled",
            "http_tokens": "required",
            # Two hops would let every pod reach the node role's credentials.
            "http_put_response_hop_limit": 1,
            "instance_metadata_tags": "disabled",
        },
        "block_device_mappings": [
            {
                "device_name": "/dev/xvda",
                "ebs": {
                    "volume_size": volume_gib,
                    "volume_type": "gp3",
                    "encrypted": "true",
                    "delete_on_termination": "true",
                },
            }
        ],
        "tag_specifications": [
            {"resource_type": "instance", "tags": tags},
            {"resource_type": "volume", "tags": tags},
        ],
        "tags": tags,
    }


def autoscaler_policy(cluster_name: str) -> str:
    """Least-privilege IAM policy for the Cluster Autoscaler's AWS cloud provider."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ResizeOwnNodeGroups",
                    "Effect": "Allow",
                    "Action": [
                        "autoscaling:SetDesiredCapacity",
                        "autoscaling:TerminateInstanceInAutoScalingGroup",
                    ],
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {
                            f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"
                        }
                    },
                },
                {
                    "Sid": "Discover",
                    "Effect": "Allow",
                    "Action": [
                        "autoscaling:DescribeAutoScalingGroups",
                        "autoscaling:DescribeAutoScalingInstances",
                        "autoscaling:DescribeLaunchConfigurations",
                        "autoscaling:DescribeScalingActivities",
                        "autoscaling:DescribeTags",
                        "ec2:DescribeImages",
                        "ec2:DescribeInstanceTypes",
                        "ec2:DescribeLaunchTemplateVersions",
                        "ec2:GetInstanceTypesFromInstanceRequirements",
                        "eks:DescribeNodegroup",
                    ],
                    "Resource": "*",
                },
            ],
        },
        indent=2,
    )


_POD_IDENTITY_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }
)
_EC2_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


class Cluster(pulumi.ComponentResource):
    """EKS with API authentication, a gateway pool, a model pool (CPU or GPU) and autoscaling."""

    name: pulumi.Output[str]
    kubeconfig_json: pulumi.Output[str]
    node_groups: list[pulumi.Resource]
    addons: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        vpc_id: pulumi.Input[str],
        public_subnet_ids: list[pulumi.Output[str]],
        private_subnet_ids: list[pulumi.Output[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:aws:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_name = settings.cluster_name

        # Created here so `pulumi destroy` removes it; EKS would otherwise create it itself
        # and leave it behind.
        logs = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs",
            name=f"/aws/eks/{cluster_name}/cluster",
            retention_in_days=7,
            opts=child,
        )
        access_entries = {
            f"admin-{index}": eks.AccessEntryArgs(
                principal_arn=arn,
                access_policies={
                    "cluster-admin": eks.AccessPolicyAssociationArgs(
                        policy_arn=_CLUSTER_ADMIN_POLICY,
                        access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    )
                },
            )
            for index, arn in enumerate(settings.admin_role_arns)
        }
        cluster = eks.Cluster(
            name,
            name=cluster_name,
            version=settings.kubernetes_version,
            vpc_id=vpc_id,
            public_subnet_ids=public_subnet_ids,
            private_subnet_ids=private_subnet_ids,
            node_associate_public_ip_address=False,
            skip_default_node_group=True,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries=access_entries,
            endpoint_public_access=True,
            endpoint_private_access=True,
            public_access_cidrs=list(settings.api_public_access_cidrs),
            enabled_cluster_log_types=_CONTROL_PLANE_LOGS,
            vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
            tags={"Project": settings.project, "Stack": settings.stack},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs]),
        )

        node_role = aws.iam.Role(
            f"{name}-node",
            assume_role_policy=_EC2_TRUST,
            description="EKS worker nodes",
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy.rsplit('/', 1)[-1]}",
                role=node_role.name,
                policy_arn=policy,
                opts=child,
            )
            for policy in _NODE_POLICIES
        ]

        gateway_nodes = self._node_group(
            name, settings, cluster, node_role, attachments, private_subnet_ids,
            pool=GATEWAY_POOL, sizes=settings.gateway_pool, gpu=False,
        )  # fmt: skip
        model_nodes = self._node_group(
            name, settings, cluster, node_role, attachments, private_subnet_ids,
            pool=MODEL_POOL, sizes=settings.model_pool, gpu=settings.gpu,
        )  # fmt: skip
        self.node_groups = [gateway_nodes, model_nodes]

        # Add-ons run pods, so they wait for nodes to exist.
        after_nodes = pulumi.ResourceOptions(parent=self, depends_on=self.node_groups)
        pod_identity = aws.eks.Addon(
            f"{name}-pod-identity-agent",
            cluster_name=cluster_name,
            addon_name="eks-pod-identity-agent",
            resolve_conflicts_on_create="OVERWRITE",
            opts=pulumi.ResourceOptions.merge(
                after_nodes, pulumi.ResourceOptions(depends_on=[cluster])
            ),
        )
        # The HorizontalPodAutoscalers read CPU use from the metrics API.
        metrics_server = aws.eks.Addon(
            f"{name}-metrics-server",
            cluster_name=cluster_name,
            addon_name="metrics-server",
            resolve_conflicts_on_create="OVERWRITE",
            opts=pulumi.ResourceOptions.merge(
                after_nodes, pulumi.ResourceOptions(depends_on=[cluster])
            ),
        )

        autoscaler_role = aws.iam.Role(
            f"{name}-cluster-autoscaler",
            assume_role_policy=_POD_IDENTITY_TRUST,
            description="Cluster Autoscaler (EKS Pod Identity)",
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-cluster-autoscaler",
            role=autoscaler_role.id,
            policy=autoscaler_policy(cluster_name),
            opts=child,
        )
        association = aws.eks.PodIdentityAssociation(
            f"{name}-cluster-autoscaler",
            cluster_name=cluster_name,
            namespace=AUTOSCALER_NAMESPACE,
            service_account=AUTOSCALER_SERVICE_ACCOUNT,
            role_arn=autoscaler_role.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster, pod_identity]),
        )
        self.addons = [pod_identity, metrics_server, association]

        self.name = pulumi.Output.from_input(cluster_name)
        self.kubeconfig_json = pulumi.Output.secret(cluster.kubeconfig_json)
        self.register_outputs({"name": self.name, "kubeconfig_json": self.kubeconfig_json})

    def _node_group(
        self,
        name: str,
        settings: Settings,
        cluster: eks.Cluster,
        node_role: aws.iam.Role,
        attachments: list[aws.iam.RolePolicyAttachment],
        subnet_ids: list[pulumi.Output[str]],
        *,
        pool: str,
        sizes: NodePool,
        gpu: bool,
    ) -> eks.ManagedNodeGroup:
        # GPU images (CUDA, cuDNN) are several GB; give those nodes room to pull them.
        template = aws.ec2.LaunchTemplate(
            f"{name}-{pool}",
            **node_launch_template_args(pool, settings.cluster_name, 80 if gpu else 30),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # The gateway pool also hosts cluster add-ons (CoreDNS, metrics-server, the
        # autoscaler), so only the model pool is tainted; the gateway pods select their pool.
        taints = (
            [{"key": POOL_LABEL, "value": MODEL_POOL, "effect": "NO_SCHEDULE"}]
            if pool == MODEL_POOL
            else []
        )
        return eks.ManagedNodeGroup(
            f"{name}-{pool}",
            cluster=cluster,
            node_role=node_role,
            node_group_name_prefix=f"{pool}-",
            ami_type="AL2023_x86_64_NVIDIA" if gpu else "AL2023_x86_64_STANDARD",
            instance_types=[sizes.instance_type],
            capacity_type=settings.node_capacity_type,
            scaling_config={
                "min_size": sizes.min_size,
                "desired_size": sizes.desired_size,
                "max_size": sizes.max_size,
            },
            # The Cluster Autoscaler owns the desired size once the group exists.
            ignore_scaling_changes=True,
            labels={POOL_LABEL: pool},
            taints=taints,
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            subnet_ids=subnet_ids,
            tags={POOL_LABEL: pool},
            opts=pulumi.ResourceOptions(parent=self, depends_on=attachments),
        )
