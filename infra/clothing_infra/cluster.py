"""The EKS cluster: control plane, two managed node groups, add-ons and the autoscaler's IAM."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks

from clothing_infra.pods import GATEWAY_POOL, MODEL_POOL, POOL_LABEL
from clothing_infra.settings import ACCELERATOR_LABEL, NodePool, accelerator

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


def pod_identity_trust(cluster_name: str, namespace: str, service_account: str) -> str:
    """Trust for EKS Pod Identity, narrowed to one service account of one cluster.

    EKS Pod Identity tags each session with the cluster, namespace and service account; the
    EKS user guide (pod-id-role.html, "Setting Conditions") restricts the role by those
    aws:RequestTag keys. It recommends no aws:SourceAccount/aws:SourceArn condition.
    """
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AllowEksAuthToAssumeRoleForPodIdentity",
                    "Effect": "Allow",
                    "Principal": {"Service": "pods.eks.amazonaws.com"},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                    "Condition": {
                        "StringEquals": {
                            "aws:RequestTag/eks-cluster-name": cluster_name,
                            "aws:RequestTag/kubernetes-namespace": namespace,
                            "aws:RequestTag/kubernetes-service-account": service_account,
                        }
                    },
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


@dataclass(frozen=True)
class ClusterArgs:
    """What the EKS cluster is built from."""

    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]
    private_subnet_ids: Sequence[pulumi.Input[str]]
    api_public_access_cidrs: Sequence[str]
    admin_role_arns: Sequence[str]
    node_capacity_type: str
    gateway_pool: NodePool
    model_pool: NodePool
    gpu: bool
    # The AWS profile `aws eks get-token` must use in the kubeconfig (stack config aws:profile).
    aws_profile: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class Cluster(pulumi.ComponentResource):
    """EKS with API authentication, a gateway pool, a model pool (CPU or GPU) and autoscaling."""

    name: pulumi.Output[str]
    kubeconfig_json: pulumi.Output[str]
    node_groups: list[pulumi.Resource]
    # What Kubernetes objects need before they can run: nodes, DNS, the autoscaler's identity.
    ready_for_workloads: list[pulumi.Resource]
    metrics_server: pulumi.Resource

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("clothing:aws:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_name = args.cluster_name

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
            for index, arn in enumerate(args.admin_role_arns)
        }
        cluster = eks.Cluster(
            name,
            name=cluster_name,
            version=args.kubernetes_version,
            vpc_id=args.vpc_id,
            public_subnet_ids=list(args.public_subnet_ids),
            private_subnet_ids=list(args.private_subnet_ids),
            node_associate_public_ip_address=False,
            skip_default_node_group=True,
            # Managed node groups use the security group EKS creates for the cluster; the
            # node security group pulumi-eks would add is for self-managed nodes only.
            skip_default_security_groups=True,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries=access_entries,
            endpoint_public_access=True,
            endpoint_private_access=True,
            public_access_cidrs=list(args.api_public_access_cidrs),
            enabled_cluster_log_types=_CONTROL_PLANE_LOGS,
            vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
            # pulumi-eks also reads aws:profile itself (nodejs/eks/cluster/cluster.ts,
            # createCluster); passing it keeps `--profile` in the kubeconfig explicit.
            provider_credential_opts=(
                eks.KubeconfigOptionsArgs(profile_name=args.aws_profile)
                if args.aws_profile
                else None
            ),
            tags=dict(args.tags),
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
            name, args, cluster, node_role, attachments,
            pool=GATEWAY_POOL, sizes=args.gateway_pool, gpu=False,
        )  # fmt: skip
        model_nodes = self._node_group(
            name, args, cluster, node_role, attachments,
            pool=MODEL_POOL, sizes=args.model_pool, gpu=args.gpu,
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
        # pulumi-eks manages CoreDNS only with its default node group (cluster.ts: the coredns
        # Addon needs `!skipDefaultNodeGroup`); otherwise it stays the unmanaged copy EKS
        # bootstraps. Adopted here so EKS keeps it patched, once nodes can run it.
        coredns = aws.eks.Addon(
            f"{name}-coredns",
            cluster_name=cluster_name,
            addon_name="coredns",
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions.merge(
                after_nodes, pulumi.ResourceOptions(depends_on=[cluster])
            ),
        )
        # The HorizontalPodAutoscalers read CPU use from the metrics API. The add-on runs two
        # replicas that keep apart; nothing waits for it, so even a pool too small for both
        # cannot hold up the Kubernetes objects (an HPA without metrics just does not scale).
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
            assume_role_policy=pod_identity_trust(
                cluster_name, AUTOSCALER_NAMESPACE, AUTOSCALER_SERVICE_ACCOUNT
            ),
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
        self.ready_for_workloads = [*self.node_groups, coredns, pod_identity, association]
        self.metrics_server = metrics_server

        self.name = pulumi.Output.from_input(cluster_name)
        self.kubeconfig_json = pulumi.Output.secret(cluster.kubeconfig_json)
        self.register_outputs({"name": self.name, "kubeconfig_json": self.kubeconfig_json})

    def _node_group(
        self,
        name: str,
        args: ClusterArgs,
        cluster: eks.Cluster,
        node_role: aws.iam.Role,
        attachments: list[aws.iam.RolePolicyAttachment],
        *,
        pool: str,
        sizes: NodePool,
        gpu: bool,
    ) -> eks.ManagedNodeGroup:
        # GPU images (CUDA, cuDNN) are several GB; give those nodes room to pull them.
        template = aws.ec2.LaunchTemplate(
            f"{name}-{pool}",
            **node_launch_template_args(pool, args.cluster_name, 80 if gpu else 30),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # The gateway pool also hosts cluster add-ons (CoreDNS, metrics-server, the
        # autoscaler), so only the model pool is tainted; the gateway pods select their pool.
        taints = (
            [{"key": POOL_LABEL, "value": MODEL_POOL, "effect": "NO_SCHEDULE"}]
            if pool == MODEL_POOL
            else []
        )
        node_labels = {POOL_LABEL: pool}
        if gpu:
            node_labels[ACCELERATOR_LABEL] = accelerator(sizes.instance_type)
        return eks.ManagedNodeGroup(
            f"{name}-{pool}",
            cluster=cluster,
            node_role=node_role,
            node_group_name_prefix=f"{pool}-",
            ami_type="AL2023_x86_64_NVIDIA" if gpu else "AL2023_x86_64_STANDARD",
            # pulumi-eks defaults the version to the cluster's only without a launch template
            # (nodejs/eks/nodes/nodegroup.ts, createManagedNodeGroupInternal), so nodes would
            # stay on the old release when kubernetes_version is raised.
            version=args.kubernetes_version,
            instance_types=[sizes.instance_type],
            capacity_type=args.node_capacity_type,
            scaling_config={
                "min_size": sizes.min_size,
                "desired_size": sizes.desired_size,
                "max_size": sizes.max_size,
            },
            # The Cluster Autoscaler owns the desired size once the group exists.
            ignore_scaling_changes=True,
            labels=node_labels,
            taints=taints,
            launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            subnet_ids=list(args.private_subnet_ids),
            tags={POOL_LABEL: pool},
            opts=pulumi.ResourceOptions(parent=self, depends_on=attachments),
        )
