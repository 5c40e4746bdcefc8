"""The stack's settings: every config key, its default, and the checks that fail a preview."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from gateway.contract import version_dirs

PROJECT = "clothing-serving"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Kubernetes minor versions this program supports, each with the Cluster Autoscaler release
# built for it (the autoscaler's minor must match the cluster's). All are covered by the EKS
# release calendar and by kubernetes-validate's bundled schemas.
CLUSTER_AUTOSCALER_IMAGES: Mapping[str, str] = {
    "1.33": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.33.6",
    "1.34": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.34.5",
    "1.35": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.35.2",
    "1.36": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.36.1",
}

# TF Serving release the model image is built on; the GPU build adds "-gpu".
TF_SERVING_VERSION = "2.21.0"

CPU_MODEL_INSTANCE_TYPE = "c6i.large"
GPU_MODEL_INSTANCE_TYPE = "g4dn.xlarge"

# Key -> default (as the string `pulumi config set` would store). None: no default.
DEFAULTS: Mapping[str, str | None] = {
    "kubernetes_version": "1.35",
    "availability_zone_count": "2",
    "vpc_cidr": "10.0.0.0/16",
    "api_public_access_cidrs": '["0.0.0.0/0"]',
    "admin_role_arns": "[]",
    "node_capacity_type": "ON_DEMAND",
    "gateway_instance_type": "t3.medium",
    "gateway_nodes_min": "1",
    "gateway_nodes_desired": "1",
    "gateway_nodes_max": "3",
    "model_instance_type": None,  # c6i.large, or g4dn.xlarge when gpu is true
    "model_nodes_min": "1",
    "model_nodes_desired": "1",
    "model_nodes_max": "4",
    "gateway_replicas_min": "2",
    "gateway_replicas_max": "6",
    "model_replicas_min": "2",
    "model_replicas_max": "6",
    "gpu": "false",
    "model_name": "clothing-model",
    "model_path": "services/model/clothing-model",
    "namespace": "clothing",
    "kubeconfig": None,  # secret; set it to deploy into an existing cluster
}

_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
# NVIDIA instance families with x86_64 CPUs (g5g is Graviton, and the images are linux/amd64).
_GPU_FAMILY = re.compile(r"^(g4dn|g5|g6|g6e|gr6|p3|p3dn|p4d|p4de|p5|p5e|p5en|p6-b200)\.")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_IAM_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")


class ConfigError(Exception):
    """One or more config keys hold values the program cannot deploy."""


@dataclass(frozen=True)
class NodePool:
    """One managed node group's instance type and size bounds."""

    instance_type: str
    min_size: int
    desired_size: int
    max_size: int


@dataclass(frozen=True)
class Replicas:
    """A Deployment's HorizontalPodAutoscaler bounds."""

    min: int
    max: int


@dataclass(frozen=True)
class Settings:
    """Everything the program reads from config, checked."""

    project: str
    stack: str
    region: str
    kubernetes_version: str
    availability_zone_count: int
    vpc_cidr: str
    api_public_access_cidrs: tuple[str, ...]
    admin_role_arns: tuple[str, ...]
    node_capacity_type: str
    gateway_pool: NodePool
    model_pool: NodePool
    gateway_replicas: Replicas
    model_replicas: Replicas
    gpu: bool
    model_name: str
    model_path: Path
    namespace: str
    existing_cluster: bool

    @property
    def cluster_name(self) -> str:
        """The EKS cluster's name, fixed so subnets can carry its tag before it exists."""
        return f"{self.project}-{self.stack}"[:100]

    @property
    def cluster_autoscaler_image(self) -> str:
        """The Cluster Autoscaler release matching the Kubernetes minor version."""
        return CLUSTER_AUTOSCALER_IMAGES[self.kubernetes_version]

    @property
    def tf_serving_tag(self) -> str:
        """The tensorflow/serving tag the model image is built on."""
        return f"{TF_SERVING_VERSION}-gpu" if self.gpu else TF_SERVING_VERSION


class _Checker:
    """Parses raw config strings, collecting one message per bad key."""

    def __init__(self, values: Mapping[str, str | None]) -> None:
        self.values = values
        self.errors: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"config key '{PROJECT}:{key}' {message}")

    def text(self, key: str) -> str:
        value = self.values.get(key)
        if value is None:
            value = DEFAULTS[key]
        return "" if value is None else value.strip()

    def integer(self, key: str, minimum: int, maximum: int) -> int:
        raw = self.text(key)
        try:
            value = int(raw)
        except ValueError:
            self.fail(key, f"must be a whole number, got {raw!r}")
            return minimum
        if not minimum <= value <= maximum:
            self.fail(key, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def boolean(self, key: str) -> bool:
        raw = self.text(key).lower()
        if raw not in ("true", "false"):
            self.fail(key, f"must be true or false, got {raw!r}")
        return raw == "true"

    def string_list(self, key: str) -> tuple[str, ...]:
        raw = self.text(key)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(key, f'must be a JSON list of strings such as ["a", "b"], got {raw!r}')
            return ()
        return tuple(value)

    def instance_type(self, key: str, default: str) -> str:
        value = self.text(key) or default
        if not _INSTANCE_TYPE.match(value):
            self.fail(key, f"must be an EC2 instance type such as t3.medium, got {value!r}")
        return value

    def ordered(self, low_key: str, low: int, high_key: str, high: int) -> None:
        if low > high:
            self.fail(low_key, f"({low}) is above '{PROJECT}:{high_key}' ({high})")


def parse_settings(
    values: Mapping[str, str | None],
    *,
    stack: str,
    region: str | None,
    repo_root: Path = REPO_ROOT,
    project: str = PROJECT,
) -> Settings:
    """Check raw config strings (key without the project prefix -> value) into Settings."""
    unknown = sorted(set(values) - set(DEFAULTS))
    check = _Checker(values)
    for key in unknown:
        check.fail(key, f"is not a setting of this program (known: {', '.join(sorted(DEFAULTS))})")
    if not region:
        check.errors.append("config key 'aws:region' must be set, e.g. eu-west-1")

    version = check.text("kubernetes_version")
    if version not in CLUSTER_AUTOSCALER_IMAGES:
        supported = ", ".join(CLUSTER_AUTOSCALER_IMAGES)
        check.fail("kubernetes_version", f"must be one of {supported}, got {version!r}")
        version = DEFAULTS["kubernetes_version"] or ""

    az_count = check.integer("availability_zone_count", 2, 6)
    vpc_cidr = check.text("vpc_cidr")
    try:
        network = ipaddress.ip_network(vpc_cidr)
        if network.version != 4 or not 16 <= network.prefixlen <= 20:
            check.fail("vpc_cidr", f"must be an IPv4 block from /16 to /20, got {vpc_cidr!r}")
    except ValueError:
        check.fail("vpc_cidr", f"must be an IPv4 CIDR block such as 10.0.0.0/16, got {vpc_cidr!r}")

    public_cidrs = check.string_list("api_public_access_cidrs")
    for cidr in public_cidrs:
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            check.fail("api_public_access_cidrs", f"holds {cidr!r}, which is not a CIDR block")
    admins = check.string_list("admin_role_arns")
    for arn in admins:
        if not _IAM_PRINCIPAL.match(arn):
            check.fail("admin_role_arns", f"holds {arn!r}, which is not an IAM role or user ARN")

    capacity = check.text("node_capacity_type").upper()
    if capacity not in ("ON_DEMAND", "SPOT"):
        check.fail("node_capacity_type", f"must be ON_DEMAND or SPOT, got {capacity!r}")

    gpu = check.boolean("gpu")
    pools = {}
    for pool, default_type in (
        ("gateway", "t3.medium"),
        ("model", GPU_MODEL_INSTANCE_TYPE if gpu else CPU_MODEL_INSTANCE_TYPE),
    ):
        low = check.integer(f"{pool}_nodes_min", 0 if pool == "model" else 1, 100)
        desired = check.integer(f"{pool}_nodes_desired", 0, 100)
        high = check.integer(f"{pool}_nodes_max", 1, 100)
        check.ordered(f"{pool}_nodes_min", low, f"{pool}_nodes_desired", desired)
        check.ordered(f"{pool}_nodes_desired", desired, f"{pool}_nodes_max", high)
        check.ordered(f"{pool}_nodes_min", low, f"{pool}_nodes_max", high)
        pools[pool] = NodePool(
            check.instance_type(f"{pool}_instance_type", default_type), low, desired, high
        )
    if gpu and not _GPU_FAMILY.match(pools["model"].instance_type):
        check.fail(
            "model_instance_type",
            f"is {pools['model'].instance_type!r}, which has no NVIDIA GPU, but "
            f"'{project}:gpu' is true (use e.g. {GPU_MODEL_INSTANCE_TYPE})",
        )

    replicas = {}
    for workload in ("gateway", "model"):
        low = check.integer(f"{workload}_replicas_min", 1, 100)
        high = check.integer(f"{workload}_replicas_max", 1, 100)
        check.ordered(f"{workload}_replicas_min", low, f"{workload}_replicas_max", high)
        replicas[workload] = Replicas(low, high)

    model_name = check.text("model_name")
    if not _MODEL_NAME.match(model_name):
        check.fail(
            "model_name", f"must be lowercase letters, digits, '.', '_', '-', got {model_name!r}"
        )
    model_path = (repo_root / check.text("model_path")).resolve()
    problem = model_directory_problem(model_path)
    if problem:
        check.fail("model_path", f"({check.text('model_path')!r}) {problem}")

    namespace = check.text("namespace")
    if not _DNS_LABEL.match(namespace) or namespace.startswith("kube-"):
        check.fail("namespace", f"must be a DNS label outside kube-*, got {namespace!r}")

    if check.errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(check.errors))
    return Settings(
        project=project,
        stack=stack,
        region=region or "",
        kubernetes_version=version,
        availability_zone_count=az_count,
        vpc_cidr=vpc_cidr,
        api_public_access_cidrs=public_cidrs,
        admin_role_arns=admins,
        node_capacity_type=capacity,
        gateway_pool=pools["gateway"],
        model_pool=pools["model"],
        gateway_replicas=replicas["gateway"],
        model_replicas=replicas["model"],
        gpu=gpu,
        model_name=model_name,
        model_path=model_path,
        namespace=namespace,
        existing_cluster=bool(check.text("kubeconfig")),
    )


def model_directory_problem(path: Path) -> str | None:
    """Why `path` is not a TF Serving model base directory, or None when it is one."""
    if not path.is_dir():
        return "is not a directory"
    versions = [child for child in version_dirs(path) if (child / "saved_model.pb").is_file()]
    if not versions:
        return "holds no <version>/saved_model.pb (export the model with scripts/convert_model.py)"
    return None


def load_settings() -> tuple[Settings, pulumi.Output[str] | None]:
    """Read and check this stack's config; also return the existing cluster's kubeconfig."""
    prefix = f"{PROJECT}:"
    all_config: Mapping[str, Any] = pulumi.runtime.config.CONFIG.get()
    values = {
        key.removeprefix(prefix): str(value)
        for key, value in all_config.items()
        if key.startswith(prefix)
    }
    settings = parse_settings(
        values, stack=pulumi.get_stack(), region=pulumi.Config("aws").get("region")
    )
    kubeconfig = pulumi.Config(PROJECT).get_secret("kubeconfig")
    return settings, kubeconfig
