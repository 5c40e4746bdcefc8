"""The resource graph the program declares, run under Pulumi's mocks for each stack variant."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from clothing_infra.declared import Declared, kubernetes_objects
from clothing_infra.gateway import SIZING
from clothing_infra.model_serving import model_server_config
from gateway.settings import Settings, env_name

from tests.infra.support import (
    EXISTING_KUBECONFIG,
    INFRA,
    PROJECT,
    REPO_ROOT,
    containers,
    dev_stack_config,
    failure,
    run_program,
)

NODE_GROUP = "eks:index:ManagedNodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
K8S_PROVIDER = "pulumi:providers:kubernetes"
ADDON = "aws:eks/addon:Addon"
POOL = "clothing-serving/pool"


def _provider_urn(reference: str) -> str:
    # A provider reference is "<urn>::<id>".
    return reference.rsplit("::", 1)[0]


# --- network -----------------------------------------------------------------------------


def test_vpc_spans_two_zones_with_tagged_public_and_private_subnets(
    default_stack: Declared,
) -> None:
    vpc = default_stack.one("aws:ec2/vpc:Vpc")
    assert vpc["inputs"]["cidrBlock"] == "10.0.0.0/16"
    assert vpc["inputs"]["enableDnsHostnames"] is True
    subnets = default_stack.of_type("aws:ec2/subnet:Subnet")
    public = [s["inputs"] for s in subnets if "public" in s["name"]]
    private = [s["inputs"] for s in subnets if "private" in s["name"]]
    assert len(public) == len(private) == 2
    assert len({s["availabilityZone"] for s in public}) == 2
    assert {s["availabilityZone"] for s in public} == {s["availabilityZone"] for s in private}
    cluster_tag = "kubernetes.io/cluster/clothing-serving-dev"
    for subnet in public:
        assert subnet["tags"]["kubernetes.io/role/elb"] == "1"
        assert subnet["tags"][cluster_tag] == "shared"
    for subnet in private:
        assert subnet["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert subnet["tags"][cluster_tag] == "shared"
        assert subnet["mapPublicIpOnLaunch"] is False
    for subnet in subnets:
        assert subnet["inputs"]["vpcId"] == vpc["id"]


def test_private_subnets_reach_the_internet_only_through_nat(default_stack: Declared) -> None:
    nat = default_stack.one("aws:ec2/natGateway:NatGateway")
    igw = default_stack.one("aws:ec2/internetGateway:InternetGateway")
    tables = {t["name"]: t for t in default_stack.of_type("aws:ec2/routeTable:RouteTable")}
    assert tables["network-private"]["inputs"]["routes"] == [
        {"cidrBlock": "0.0.0.0/0", "natGatewayId": nat["id"]}
    ]
    assert tables["network-public"]["inputs"]["routes"] == [
        {"cidrBlock": "0.0.0.0/0", "gatewayId": igw["id"]}
    ]
    subnet_ids = {s["name"]: s["id"] for s in default_stack.of_type("aws:ec2/subnet:Subnet")}
    associations = {
        a["inputs"]["subnetId"]: a["inputs"]["routeTableId"]
        for a in default_stack.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    }
    for name, subnet_id in subnet_ids.items():
        table = "network-private" if "private" in name else "network-public"
        assert associations[subnet_id] == tables[table]["id"]
    public_ids = {i for n, i in subnet_ids.items() if "public" in n}
    assert nat["inputs"]["subnetId"] in public_ids


# --- cluster -----------------------------------------------------------------------------


def test_eks_cluster_is_pinned_private_and_uses_access_entries(default_stack: Declared) -> None:
    cluster = default_stack.one("eks:index:Cluster")["inputs"]
    config = dev_stack_config()
    assert cluster["name"] == "clothing-serving-dev"
    assert cluster["version"] == config[f"{PROJECT}:kubernetes_version"]
    assert cluster["authenticationMode"] == "API"
    assert cluster["skipDefaultNodeGroup"] is True
    assert cluster["nodeAssociatePublicIpAddress"] is False
    assert cluster["vpcCniOptions"]["enableNetworkPolicy"] is True
    # Managed node groups use EKS's cluster security group; no unused node group of ours.
    assert cluster["skipDefaultSecurityGroups"] is True
    assert "providerCredentialOpts" not in cluster  # no aws:profile in the dev stack
    subnets = {s["name"]: s["id"] for s in default_stack.of_type("aws:ec2/subnet:Subnet")}
    assert sorted(cluster["privateSubnetIds"]) == sorted(
        i for n, i in subnets.items() if "private" in n
    )
    assert sorted(cluster["publicSubnetIds"]) == sorted(
        i for n, i in subnets.items() if "public" in n
    )
    logs = default_stack.one("aws:cloudwatch/logGroup:LogGroup")
    assert logs["inputs"]["name"] == "/aws/eks/clothing-serving-dev/cluster"
    assert logs["urn"] in default_stack.one("eks:index:Cluster")["dependencies"]


def test_two_node_groups_with_their_own_labels_taints_and_imdsv2_hop_1(
    default_stack: Declared,
) -> None:
    groups = {g["name"]: g for g in default_stack.of_type(NODE_GROUP)}
    templates = {t["name"]: t for t in default_stack.of_type(LAUNCH_TEMPLATE)}
    cluster = default_stack.one("eks:index:Cluster")
    subnets = sorted(
        s["id"] for s in default_stack.of_type("aws:ec2/subnet:Subnet") if "private" in s["name"]
    )
    assert set(groups) == {"cluster-gateway", "cluster-model"}
    for pool, instance_type, ami in (
        ("gateway", "t3.medium", "AL2023_x86_64_STANDARD"),
        ("model", "c6i.large", "AL2023_x86_64_STANDARD"),
    ):
        group = groups[f"cluster-{pool}"]
        inputs = group["inputs"]
        template = templates[f"cluster-{pool}"]
        assert inputs["cluster"] == cluster["urn"]
        assert inputs["instanceTypes"] == [instance_type]
        assert inputs["amiType"] == ami
        # With a launch template pulumi-eks leaves the version unset; nodes must follow
        # kubernetes_version like the control plane.
        assert inputs["version"] == cluster["inputs"]["version"] == "1.35"
        assert inputs["labels"] == {POOL: pool}
        assert inputs["launchTemplate"] == {"id": template["id"], "version": "1"}
        assert "enableImdSv2" not in inputs
        assert inputs["ignoreScalingChanges"] is True
        assert sorted(inputs["subnetIds"]) == subnets
        metadata = template["inputs"]["metadataOptions"]
        assert metadata["httpTokens"] == "required"
        assert metadata["httpPutResponseHopLimit"] == 1
        disk = template["inputs"]["blockDeviceMappings"][0]["ebs"]
        assert disk["encrypted"] == "true"
    assert groups["cluster-model"]["inputs"]["taints"] == [
        {"key": POOL, "value": "model", "effect": "NO_SCHEDULE"}
    ]
    # Untainted so CoreDNS, metrics-server and the autoscaler have somewhere to run.
    assert groups["cluster-gateway"]["inputs"].get("taints", []) == []
    config = dev_stack_config()
    for pool in ("gateway", "model"):
        scaling = groups[f"cluster-{pool}"]["inputs"]["scalingConfig"]
        assert scaling == {
            "minSize": int(config[f"{PROJECT}:{pool}_nodes_min"]),
            "desiredSize": int(config[f"{PROJECT}:{pool}_nodes_desired"]),
            "maxSize": int(config[f"{PROJECT}:{pool}_nodes_max"]),
        }


def test_node_role_can_pull_from_ecr_and_join_the_cluster(default_stack: Declared) -> None:
    role = default_stack.one("aws:iam/role:Role", "cluster-node")
    trust = json.loads(role["inputs"]["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = {
        a["inputs"]["policyArn"]
        for a in default_stack.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a["inputs"]["role"] == role["outputs"]["name"]
    }
    assert {
        "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
        "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
    } <= attached
    for group in default_stack.of_type(NODE_GROUP):
        assert group["inputs"]["nodeRole"] == role["id"]


def test_cluster_autoscaler_gets_aws_access_through_pod_identity(default_stack: Declared) -> None:
    association = default_stack.one("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    role = default_stack.one("aws:iam/role:Role", "cluster-cluster-autoscaler")
    assert association["inputs"] == {
        "clusterName": "clothing-serving-dev",
        "namespace": "kube-system",
        "serviceAccount": "cluster-autoscaler",
        "roleArn": role["outputs"]["arn"],
    }
    trust = json.loads(role["inputs"]["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(trust["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    # Only the autoscaler's service account of this cluster may assume it.
    assert trust["Condition"] == {
        "StringEquals": {
            "aws:RequestTag/eks-cluster-name": "clothing-serving-dev",
            "aws:RequestTag/kubernetes-namespace": "kube-system",
            "aws:RequestTag/kubernetes-service-account": "cluster-autoscaler",
        }
    }
    policy = json.loads(default_stack.one("aws:iam/rolePolicy:RolePolicy")["inputs"]["policy"])
    resize = next(s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"])
    assert resize["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/clothing-serving-dev": "owned"}
    }
    addons = {a["inputs"]["addonName"] for a in default_stack.of_type("aws:eks/addon:Addon")}
    assert addons == {"coredns", "eks-pod-identity-agent", "metrics-server"}

    deployment = default_stack.k8s("Deployment", "cluster-autoscaler")
    assert deployment["metadata"]["namespace"] == "kube-system"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "cluster-autoscaler"
    (container,) = pod["containers"]
    assert container["image"] == "registry.k8s.io/autoscaling/cluster-autoscaler:v1.35.2"
    assert (
        "--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,"
        "k8s.io/cluster-autoscaler/clothing-serving-dev"
    ) in container["args"]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]
    assert pod["nodeSelector"] == {POOL: "gateway"}


# --- registry and images -------------------------------------------------------------------


def test_one_immutable_scanned_force_deletable_repository_per_image(
    default_stack: Declared,
) -> None:
    repositories = default_stack.of_type("aws:ecr/repository:Repository")
    assert sorted(r["inputs"]["name"] for r in repositories) == [
        "clothing-serving-dev/gateway",
        "clothing-serving-dev/model",
    ]
    lifecycle = {
        p["inputs"]["repository"]: json.loads(p["inputs"]["policy"])
        for p in default_stack.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    }
    for repository in repositories:
        inputs = repository["inputs"]
        assert inputs["imageTagMutability"] == "IMMUTABLE"
        assert inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        assert inputs["forceDelete"] is True
        rules = lifecycle[inputs["name"]]["rules"]
        assert {rule["action"]["type"] for rule in rules} == {"expire"}


def test_images_are_built_for_amd64_pushed_with_content_tags_and_ecr_login(
    default_stack: Declared, model_dir: Path
) -> None:
    images = {i["name"]: i["inputs"] for i in default_stack.of_type("docker-build:index:Image")}
    assert set(images) == {"images-model", "images-gateway"}
    for name, image in images.items():
        repository = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/clothing-serving-dev/{name[7:]}"
        assert image["platforms"] == ["linux/amd64"]
        assert image["push"] is True
        (tag,) = image["tags"]
        assert tag.startswith(f"{repository}:sha-")
        assert not tag.endswith(":latest")
        (registry,) = image["registries"]
        assert registry == {
            "address": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "username": "AWS",
            "password": "mock-ecr-token",
        }
    model = images["images-model"]
    assert model["buildArgs"] == {
        "TF_SERVING_TAG": "2.21.0",
        "MODEL_NAME": "clothing-model",
        "MODEL_CONFIG": model_server_config("clothing-model", 1, None),
    }
    # Paths are relative to the program's working directory, as under `pulumi`.
    assert (INFRA / model["context"]["location"]).resolve() == REPO_ROOT / "services" / "model"
    named = model["context"]["named"]
    assert (INFRA / named["model"]["location"]).resolve() == model_dir.resolve()
    # No canary: the Dockerfile's canary stage gets the empty stand-in folder.
    assert (INFRA / named["canary"]["location"]).resolve() == (
        REPO_ROOT / "services" / "model" / "no-canary"
    )
    gateway = images["images-gateway"]
    assert (INFRA / gateway["context"]["location"]).resolve() == REPO_ROOT / "services" / "gateway"
    assert (INFRA / gateway["dockerfile"]["location"]).resolve() == (
        REPO_ROOT / "services" / "gateway" / "Dockerfile"
    )


def test_deployments_run_the_pushed_digests(default_stack: Declared) -> None:
    refs = {
        i["name"]: default_stack.by_urn(i["urn"])
        for i in default_stack.of_type("docker-build:index:Image")
    }
    model_ref = default_stack.export("model_image")
    gateway_ref = default_stack.export("gateway_image")
    assert "@sha256:" in model_ref and "@sha256:" in gateway_ref
    assert model_ref.split("@")[0] == refs["images-model"]["inputs"]["tags"][0]
    (tf_serving,) = containers(default_stack.k8s("Deployment", "tf-serving"))
    (gateway,) = containers(default_stack.k8s("Deployment", "gateway"))
    assert tf_serving["image"] == model_ref
    assert gateway["image"] == gateway_ref


# --- Kubernetes --------------------------------------------------------------------------


def test_every_kubernetes_object_is_on_the_cluster_provider_that_waits_for_nodes(
    default_stack: Declared,
) -> None:
    provider = default_stack.one(K8S_PROVIDER)
    cluster = default_stack.one("eks:index:Cluster")
    assert provider["inputs"]["kubeconfig"] == cluster["outputs"]["kubeconfigJson"]
    assert provider["secret_inputs"] == ["kubeconfig"]
    waits_for = set(provider["dependencies"])
    for group in default_stack.of_type(NODE_GROUP):
        assert group["urn"] in waits_for
    addons = {a["inputs"]["addonName"]: a["urn"] for a in default_stack.of_type(ADDON)}
    for name in ("coredns", "eks-pod-identity-agent"):
        assert addons[name] in waits_for
    association = default_stack.one("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert association["urn"] in waits_for
    # metrics-server's two replicas keep apart: on a pool that is too small one stays
    # Pending and the add-on DEGRADED; nothing may wait for it.
    assert addons["metrics-server"] not in waits_for
    objects = [r for r in default_stack.resources if r["type"].startswith("kubernetes:")]
    assert len(objects) >= 20
    for resource in objects:
        assert _provider_urn(resource["provider"]) == provider["urn"], resource["name"]


def test_namespace_enforces_restricted_pod_security(default_stack: Declared) -> None:
    namespace = default_stack.k8s("Namespace", "clothing")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce-version"] == "v1.35"
    deny = default_stack.k8s("NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    for kind, name in (("Deployment", "tf-serving"), ("Deployment", "gateway")):
        manifest = default_stack.k8s(kind, name)
        assert manifest["metadata"]["namespace"] == "clothing"
        pod = manifest["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsUser"] >= 10000
    for name in ("tf-serving", "gateway"):
        assert default_stack.k8s("ServiceAccount", name)["automountServiceAccountToken"] is False


def test_tf_serving_runs_batched_monitored_on_the_model_pool(default_stack: Declared) -> None:
    deployment = default_stack.k8s("Deployment", "tf-serving")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # tini as PID 1 turns SIGTERM into the end of the server.
    assert container["command"] == ["/usr/bin/tini", "--", "/usr/bin/tensorflow_model_server"]
    assert container["args"] == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/etc/tfserving/models.config",
        "--allow_version_labels_for_unavailable_models=true",
        "--enable_batching",
        "--batching_parameters_file=/etc/tfserving/batching_parameters.txt",
        "--monitoring_config_file=/etc/tfserving/monitoring.config",
        "--file_system_poll_wait_seconds=0",
        "--max_num_load_retries=0",
        "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism=2",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=30000,"
        "grpc.max_connection_age_grace_ms=10000",
    ]
    # The op thread pools follow the container's CPU limit, not the node's cores.
    assert container["resources"]["limits"]["cpu"] == "2"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    available = {"path": "/v1/models/clothing-model/metadata", "port": "http"}
    assert container["startupProbe"]["httpGet"] == available
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert container["readinessProbe"]["httpGet"] == available
    assert container["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert pod["nodeSelector"] == {POOL: "model"}
    assert pod["tolerations"] == [
        {"key": POOL, "operator": "Equal", "value": "model", "effect": "NoSchedule"}
    ]
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["progressDeadlineSeconds"] >= 900
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8501",
        "prometheus.io/path": "/monitoring/prometheus/metrics",
    }


def test_tf_serving_drains_before_it_stops(default_stack: Declared) -> None:
    deployment = default_stack.k8s("Deployment", "tf-serving")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    channel = dict(
        argument.split("=")
        for argument in next(
            a for a in container["args"] if a.startswith("--grpc_channel_arguments=")
        )
        .split("=", 1)[1]
        .split(",")
    )
    # Gateways leave a stopping pod once their connection to it has aged out (age + grace)
    # and DNS no longer lists it (CoreDNS caches up to 30 s): all before SIGTERM.
    drained = (
        int(channel["grpc.max_connection_age_ms"])
        + int(channel["grpc.max_connection_age_grace_ms"])
    ) / 1000 + 30
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > drained
    assert pod["terminationGracePeriodSeconds"] > pre_stop
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_tf_serving_is_headless_internal_and_admits_only_the_gateway(
    default_stack: Declared,
) -> None:
    service = default_stack.k8s("Service", "tf-serving-headless")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["type"] == "ClusterIP"
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    policy = default_stack.k8s("NetworkPolicy", "tf-serving-from-gateway")
    tf_serving_pods = default_stack.k8s("Deployment", "tf-serving")["spec"]["template"]["metadata"]
    gateway_pods = default_stack.k8s("Deployment", "gateway")["spec"]["template"]["metadata"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= tf_serving_pods["labels"].items()
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= gateway_pods["labels"].items()
    assert not source["podSelector"]["matchLabels"].items() <= tf_serving_pods["labels"].items()
    assert rule["ports"] == [{"protocol": "TCP", "port": 8500}]


def test_gateway_points_at_tf_serving_and_drains_before_stopping(default_stack: Declared) -> None:
    deployment = default_stack.k8s("Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["TF_SERVING_HOST"] == "dns:///tf-serving-headless.clothing.svc.cluster.local:8500"
    assert env["GATEWAY_MODEL_NAME"] == "clothing-model"
    assert env["GATEWAY_METRICS_BIND"] == "0.0.0.0:9697"
    assert "GATEWAY_API_KEYS_FILE" not in env
    assert (env["GATEWAY_CANARY_PERCENT"], env["GATEWAY_SHADOW_PERCENT"]) == ("0", "0")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["PROMETHEUS_MULTIPROC_DIR"]]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [
        {"name": "http", "containerPort": 9696, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9697, "protocol": "TCP"},
    ]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 20
    # preStop, then gunicorn's graceful timeout, must fit in the grace period.
    graceful = int(env["GATEWAY_GRACEFUL_TIMEOUT_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + graceful
    assert pod["nodeSelector"] == {POOL: "gateway"}
    assert "tolerations" not in pod
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_gateway_sizing_has_one_home_passed_to_gunicorn_and_the_decode_budget(
    default_stack: Declared,
) -> None:
    (container,) = containers(default_stack.k8s("Deployment", "gateway"))
    env = {e["name"]: e for e in container["env"]}
    assert env["GATEWAY_WORKERS"]["value"] == str(SIZING.workers)
    assert env["GATEWAY_THREADS"]["value"] == str(SIZING.threads) == "160"
    # The memory limit reaches the gateway through the downward API: no second copy.
    assert env["GATEWAY_MEMORY_LIMIT_BYTES"]["valueFrom"] == {
        "resourceFieldRef": {
            "containerName": "gateway",
            "resource": "limits.memory",
            "divisor": "1",
        }
    }
    assert container["resources"] == {
        "requests": {"cpu": SIZING.cpu_request, "memory": SIZING.memory_request},
        "limits": {"cpu": SIZING.cpu_limit, "memory": SIZING.memory_limit},
    }


def test_gateway_rollout_waits_for_tf_serving_as_long_as_tf_serving_may_take(
    default_stack: Declared,
) -> None:
    model = default_stack.one("kubernetes:apps/v1:Deployment", "model-serving-deployment")
    gateway = default_stack.one("kubernetes:apps/v1:Deployment", "gateway-deployment")
    service = default_stack.one("kubernetes:core/v1:Service", "gateway-lb")
    # pulumi-kubernetes does not wait for pods behind the headless Service, so the order is
    # explicit: TF Serving ready, then the gateway (whose /readyz needs TF Serving), then the
    # LoadBalancer Service (which waits for ready gateway pods).
    assert model["urn"] in gateway["dependencies"]
    assert gateway["urn"] in service["dependencies"]
    for resource in (model, gateway, service):
        assert resource["custom_timeouts"]["create"] == "1500s"
        assert resource["custom_timeouts"]["update"] == "1500s"
    assert (
        gateway["inputs"]["spec"]["progressDeadlineSeconds"]
        == (model["inputs"]["spec"]["progressDeadlineSeconds"])
    )


def test_the_gateway_load_balancer_is_the_only_public_entry(default_stack: Declared) -> None:
    services = [o for o in default_stack.kubernetes_objects() if o["kind"] == "Service"]
    public = [s for s in services if s["spec"].get("type") in ("LoadBalancer", "NodePort")]
    assert [s["metadata"]["name"] for s in public] == ["gateway"]
    (gateway,) = public
    annotations = gateway["metadata"]["annotations"]
    assert annotations == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
        "service.beta.kubernetes.io/aws-load-balancer-cross-zone-load-balancing-enabled": "true",
    }
    assert gateway["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    selector = gateway["spec"]["selector"]
    pods = default_stack.k8s("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pods.items()


@pytest.mark.parametrize("variant", ["default", "options"])
def test_no_service_exposes_a_metrics_port(stacks: dict[str, Declared], variant: str) -> None:
    stack = stacks[variant]
    (gateway,) = containers(stack.k8s("Deployment", "gateway"))
    metrics = {p["name"] for p in gateway["ports"] if p["containerPort"] == 9697}
    assert metrics == {"metrics"}
    for service in (o for o in stack.kubernetes_objects() if o["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] not in ("metrics", 9697), service["metadata"]["name"]
            assert port["port"] != 9697
    public = stack.k8s("Service", "gateway")
    assert {p["targetPort"] for p in public["spec"]["ports"]} == {"http"}


def test_prometheus_in_the_monitoring_namespace_may_scrape_both_tiers(
    default_stack: Declared,
) -> None:
    for workload, port in (("gateway", 9697), ("tf-serving", 8501)):
        policy = default_stack.k8s("NetworkPolicy", f"{workload}-metrics")
        pods = default_stack.k8s("Deployment", workload)["spec"]["template"]["metadata"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pods["labels"].items()
        assert policy["spec"]["ingress"] == [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        }
                    }
                ],
                "ports": [{"protocol": "TCP", "port": port}],
            }
        ]
        assert pods["annotations"]["prometheus.io/port"] == str(port)
    # The gateway's public ingress rule stays the HTTP port only.
    public = default_stack.k8s("NetworkPolicy", "gateway-ingress")
    assert public["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9696}]}]
    assert not [o for o in default_stack.kubernetes_objects() if o["kind"] == "PodMonitor"]


def test_each_workload_has_an_hpa_and_a_pdb_from_config(default_stack: Declared) -> None:
    config = dev_stack_config()
    for name, key in (("tf-serving", "model"), ("gateway", "gateway")):
        hpa = default_stack.k8s("HorizontalPodAutoscaler", name)
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert hpa["spec"]["minReplicas"] == int(config[f"{PROJECT}:{key}_replicas_min"])
        assert hpa["spec"]["maxReplicas"] == int(config[f"{PROJECT}:{key}_replicas_max"])
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        behavior = hpa["spec"]["behavior"]
        assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
        assert behavior["scaleDown"]["policies"] == [
            {"type": "Pods", "value": 1, "periodSeconds": 60}
        ]
        pdb = default_stack.k8s("PodDisruptionBudget", name)
        labels = default_stack.k8s("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["maxUnavailable"] == 1


def test_stack_outputs(default_stack: Declared) -> None:
    service = default_stack.one("kubernetes:core/v1:Service", "gateway-lb")
    hostname = f"{service['name']}-0123456789abcdef.elb.eu-west-1.amazonaws.com"
    assert default_stack.export("gateway_url") == f"http://{hostname}/predict"
    assert default_stack.export("cluster_name") == "clothing-serving-dev"
    assert default_stack.exports["kubeconfig"]["secret"] is True
    cluster = default_stack.one("eks:index:Cluster")
    assert default_stack.export("kubeconfig") == cluster["outputs"]["kubeconfigJson"]
    assert default_stack.export("model_repository_url").endswith("/clothing-serving-dev/model")
    assert default_stack.export("gateway_repository_url").endswith("/clothing-serving-dev/gateway")
    for key in ("model_image", "gateway_image"):
        assert not default_stack.exports[key]["secret"]


def test_no_gpu_resources_without_gpu(default_stack: Declared) -> None:
    assert not [o for o in default_stack.kubernetes_objects() if o["kind"] == "DaemonSet"]
    (container,) = containers(default_stack.k8s("Deployment", "tf-serving"))
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


# --- GPU -----------------------------------------------------------------------------------


def test_gpu_stack_uses_nvidia_nodes_device_plugin_and_gpu_image(gpu_stack: Declared) -> None:
    model_group = gpu_stack.one(NODE_GROUP, "cluster-model")["inputs"]
    assert model_group["amiType"] == "AL2023_x86_64_NVIDIA"
    assert model_group["instanceTypes"] == ["g4dn.xlarge"]
    assert (
        gpu_stack.one(NODE_GROUP, "cluster-gateway")["inputs"]["amiType"]
        == "AL2023_x86_64_STANDARD"
    )
    image = gpu_stack.one("docker-build:index:Image", "images-model")["inputs"]
    assert image["buildArgs"]["TF_SERVING_TAG"] == "2.21.0-gpu"
    (container,) = containers(gpu_stack.k8s("Deployment", "tf-serving"))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    plugin = gpu_stack.k8s("DaemonSet", "nvidia-device-plugin")
    pod = plugin["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {POOL: "model"}
    assert {"key": POOL, "operator": "Equal", "value": "model", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert plugin["metadata"]["namespace"] == "kube-system"


def test_gpu_and_cpu_model_images_get_different_tags(
    default_stack: Declared, gpu_stack: Declared
) -> None:
    cpu = default_stack.one("docker-build:index:Image", "images-model")["inputs"]["tags"]
    gpu = gpu_stack.one("docker-build:index:Image", "images-model")["inputs"]["tags"]
    assert cpu != gpu
    gateway_cpu = default_stack.one("docker-build:index:Image", "images-gateway")["inputs"]["tags"]
    gateway_gpu = gpu_stack.one("docker-build:index:Image", "images-gateway")["inputs"]["tags"]
    assert gateway_cpu == gateway_gpu


# --- existing cluster ----------------------------------------------------------------------


def test_existing_cluster_creates_no_aws_cluster_and_uses_the_given_kubeconfig(
    existing_stack: Declared,
) -> None:
    types = {r["type"] for r in existing_stack.resources}
    assert not {t for t in types if t.startswith(("aws:ec2", "aws:eks", "eks:", "aws:iam"))}
    assert "aws:ecr/repository:Repository" in types
    provider = existing_stack.one(K8S_PROVIDER)
    assert provider["inputs"]["kubeconfig"] == EXISTING_KUBECONFIG
    assert provider["secret_inputs"] == ["kubeconfig"]
    for resource in existing_stack.resources:
        if resource["type"].startswith("kubernetes:"):
            assert _provider_urn(resource["provider"]) == provider["urn"]
    for name in ("tf-serving", "gateway"):
        pod = existing_stack.k8s("Deployment", name)["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod and "tolerations" not in pod
    assert not [
        o
        for o in existing_stack.kubernetes_objects()
        if o["metadata"].get("namespace") == "kube-system"
    ]
    assert existing_stack.export("cluster_name") is None
    assert existing_stack.exports["kubeconfig"]["secret"] is True
    assert existing_stack.export("gateway_url").endswith(".elb.eu-west-1.amazonaws.com/predict")


# --- config errors through the whole program -------------------------------------------------


# case -> (config overrides, the key the error must name)
BAD_CONFIGS = {
    "min-above-max": (
        {"gateway_replicas_min": "5", "gateway_replicas_max": "3"},
        "gateway_replicas_min",
    ),
    "gpu-without-gpu-instance": (
        {"gpu": "true", "model_instance_type": "c6i.large"},
        "model_instance_type",
    ),
    "unknown-model-path": ({"model_path": "services/model/no-such-model"}, "model_path"),
    "deployer-as-admin": (
        {"admin_role_arns": '["arn:aws:iam::123456789012:role/deployer"]'},
        "admin_role_arns",
    ),
    "canary-percent-out-of-range": ({"canary_percent": "101"}, "canary_percent"),
    "canary-percent-without-canary": ({"canary_percent": "10"}, "canary_percent"),
    "shadow-without-canary": ({"shadow_percent": "100"}, "shadow_percent"),
    "bad-certificate": ({"tls_certificate_arn": "my-cert"}, "tls_certificate_arn"),
}


@pytest.fixture(scope="module")
def failed_previews(model_dir: Path) -> dict[str, str]:
    """Previews of the dev stack with one bad setting each, run side by side."""
    started = {}
    for case, (overrides, _) in BAD_CONFIGS.items():
        config = {**dev_stack_config(), f"{PROJECT}:model_path": str(model_dir)}
        config.update({f"{PROJECT}:{key}": value for key, value in overrides.items()})
        started[case] = run_program(config, preview=True)
    return {case: failure(process) for case, process in started.items()}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_fails_the_preview_naming_the_key(
    failed_previews: dict[str, str], case: str
) -> None:
    key = BAD_CONFIGS[case][1]
    assert f"config key '{PROJECT}:{key}'" in failed_previews[case]


@pytest.mark.parametrize("variant", ["default", "options"])
def test_every_gateway_variable_the_program_sets_is_a_gateway_setting(
    stacks: dict[str, Declared], variant: str
) -> None:
    declared = {env_name(field.name) for field in dataclasses.fields(Settings)}
    # prometheus_client's own variable for its multiprocess directory.
    known = declared | {"PROMETHEUS_MULTIPROC_DIR"}
    (container,) = containers(stacks[variant].k8s("Deployment", "gateway"))
    names = {variable["name"] for variable in container["env"]}
    assert names <= known, names - known


def test_the_scaling_harness_reads_the_dev_stack_from_the_program_itself() -> None:
    # benchmarks/scaling reads the HPAs, TF Serving's flags and the rollout strategy this way.
    objects = {(o["kind"], o["metadata"]["name"]): o for o in kubernetes_objects()}
    hpa = objects[("HorizontalPodAutoscaler", "tf-serving")]["spec"]
    assert hpa["minReplicas"] == int(dev_stack_config()[f"{PROJECT}:model_replicas_min"])
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    (tf_serving,) = containers(objects[("Deployment", "tf-serving")])
    assert any(arg.startswith("--grpc_channel_arguments=") for arg in tf_serving["args"])
    strategy = objects[("Deployment", "gateway")]["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
