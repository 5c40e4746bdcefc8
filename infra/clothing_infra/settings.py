"""The stack's settings: every config key, its default, and the checks that fail a preview."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
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
    # Two gateway nodes (the node group spans the zones): a node's loss leaves one gateway
    # replica serving, and the metrics-server add-on's two replicas have a node each.
    "gateway_nodes_min": "2",
    "gateway_nodes_desired": "2",
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
    "tls_certificate_arn": None,  # ACM certificate: the NLB then serves HTTPS on 443 only
    "api_keys": None,  # secret JSON list; set: the gateway requires one of the keys
    "monitoring_namespace": "monitoring",  # Prometheus there may scrape the metrics ports
    "pod_monitor": "false",  # true: also declare PodMonitors (needs the Prometheus Operator CRDs)
    "canary_model_path": None,  # a second model base directory served as version label canary
    "canary_percent": "0",  # share of requests the gateway sends to canary
    "shadow_percent": "0",  # share of requests also sent to canary and compared, answered by stable
}
# Keys whose values must be stored encrypted (`pulumi config set --secret`).
SECRET_KEYS = frozenset({"kubeconfig", "api_keys"})

_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
# The x86_64 NVIDIA families the AL2023_x86_64_NVIDIA AMI supports, as listed by the EKS user
# guide (ml-eks-optimized-ami.html); g5g and p6e-gb200 are Arm, and the images are linux/amd64.
GPU_FAMILIES = (
    "g4dn", "g5", "g6", "g6e", "g6f", "gr6", "gr6f", "g7e",
    "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6-b300",
)  # fmt: skip
_GPU_FAMILY = re.compile(rf"^({'|'.join(re.escape(f) for f in GPU_FAMILIES)})\.")
# The Cluster Autoscaler's AWS provider treats nodes with this label as GPU nodes and waits
# for the device plugin to advertise nvidia.com/gpu instead of adding more nodes
# (kubernetes/autoscaler cluster-autoscaler/cloudprovider/aws/aws_cloud_provider.go, GPULabel).
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
# Instance family -> GPU name, spelt as that file's availableGPUTypes where it lists the GPU.
# Only the label's presence matters to the autoscaler's GPU handling (utils/gpu).
_ACCELERATORS = {
    "g4dn": "nvidia-tesla-t4",
    "g5": "nvidia-a10g",
    "g6": "nvidia-l4",
    "g6f": "nvidia-l4",
    "gr6": "nvidia-l4",
    "gr6f": "nvidia-l4",
    "g6e": "nvidia-l40s",
    "g7e": "nvidia-rtx-pro-6000",
    "p3": "nvidia-tesla-v100",
    "p3dn": "nvidia-tesla-v100",
    "p4d": "nvidia-tesla-a100",
    "p4de": "nvidia-tesla-a100",
    "p5": "nvidia-h100",
    "p5e": "nvidia-h200",
    "p5en": "nvidia-h200",
    "p6-b200": "nvidia-b200",
    "p6-b300": "nvidia-b300",
}


def accelerator(instance_type: str) -> str:
    """The accelerator label value of a GPU instance type (its NVIDIA GPU's name)."""
    return _ACCELERATORS[instance_type.split(".", 1)[0]]


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_IAM_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
_ACM_CERTIFICATE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")
_API_KEY = re.compile(r"^[\x21-\x7e]{16,256}$")


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
    tls_certificate_arn: str | None
    monitoring_namespace: str
    pod_monitor: bool
    canary_model_path: Path | None
    canary_percent: float
    shadow_percent: float

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

    @property
    def stable_version(self) -> int:
        """The model version served as `stable`: the newest one under model_path."""
        return max(model_versions(self.model_path))

    @property
    def canary_version(self) -> int | None:
        """The model version served as `canary`: the newest under canary_model_path, if set."""
        if self.canary_model_path is None:
            return None
        return max(model_versions(self.canary_model_path))


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

    def percent(self, key: str) -> float:
        raw = self.text(key)
        try:
            value = float(raw)
        except ValueError:
            self.fail(key, f"must be a number from 0 to 100, got {raw!r}")
            return 0.0
        if not 0 <= value <= 100:
            self.fail(key, f"must be from 0 to 100, got {raw}")
            return 0.0
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
    model_problem = model_directory_problem(model_path)
    if model_problem:
        check.fail("model_path", f"({check.text('model_path')!r}) {model_problem}")

    namespace = check.text("namespace")
    if not _DNS_LABEL.match(namespace) or namespace.startswith("kube-"):
        check.fail("namespace", f"must be a DNS label outside kube-*, got {namespace!r}")
    monitoring_namespace = check.text("monitoring_namespace")
    if not _DNS_LABEL.match(monitoring_namespace):
        check.fail(
            "monitoring_namespace", f"must be a namespace name, got {monitoring_namespace!r}"
        )
    pod_monitor = check.boolean("pod_monitor")

    certificate = check.text("tls_certificate_arn") or None
    if certificate is not None and not _ACM_CERTIFICATE.match(certificate):
        check.fail(
            "tls_certificate_arn",
            f"must be an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>), "
            f"got {certificate!r}",
        )

    canary_path: Path | None = None
    if check.text("canary_model_path"):
        canary_path = (repo_root / check.text("canary_model_path")).resolve()
        problem = model_directory_problem(canary_path)
        if problem:
            check.fail("canary_model_path", f"({check.text('canary_model_path')!r}) {problem}")
        elif not model_problem and max(model_versions(canary_path)) <= max(
            model_versions(model_path)
        ):
            check.fail(
                "canary_model_path",
                f"holds version {max(model_versions(canary_path))}, not above model_path's "
                f"{max(model_versions(model_path))}; export the new model under a higher version "
                "(scripts/convert_model.py --version)",
            )
    canary_percent = check.percent("canary_percent")
    shadow_percent = check.percent("shadow_percent")
    for key, value in (("canary_percent", canary_percent), ("shadow_percent", shadow_percent)):
        if value > 0 and canary_path is None:
            check.fail(key, f"is {value:g}, but '{project}:canary_model_path' is not set")
    if canary_percent > 0 and shadow_percent > 0:
        check.fail(
            "shadow_percent",
            f"is {shadow_percent:g} while '{project}:canary_percent' is {canary_percent:g}; "
            "shadow compares canary with stable before any user gets canary: set one of them to 0",
        )

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
        tls_certificate_arn=certificate,
        monitoring_namespace=monitoring_namespace,
        pod_monitor=pod_monitor,
        canary_model_path=canary_path,
        canary_percent=canary_percent,
        shadow_percent=shadow_percent,
    )


def _identity(arn: str) -> tuple[str, str, str]:
    """(account, "role" or "user", name) of an IAM ARN or an assumed role's session ARN."""
    # arn:aws:iam::<account>:role/<path/><name>, arn:aws:iam::<account>:user/<name>,
    # arn:aws:sts::<account>:assumed-role/<name>/<session> (a session ARN has no role path).
    _, _, service, _, account, resource = arn.split(":", 5)
    kind, _, rest = resource.partition("/")
    if service == "sts" and kind == "assumed-role":
        return account, "role", rest.split("/", 1)[0]
    return account, kind, rest.rsplit("/", 1)[-1]


def admins_exclude_deployer(admin_role_arns: Sequence[str], caller_arn: str) -> None:
    """Refuse an admin ARN that is the deployer's own principal.

    EKS already gives the cluster's creator an access entry (pulumi-eks sets
    bootstrapClusterCreatorAdminPermissions), so a second one fails with ResourceInUse.
    """
    deployer = _identity(caller_arn)
    for arn in admin_role_arns:
        if _identity(arn) == deployer:
            raise ConfigError(
                f"invalid configuration:\n  config key '{PROJECT}:admin_role_arns' holds "
                f"{arn!r}, the identity running this deployment ({caller_arn}); EKS already "
                "gives the cluster's creator admin access, so leave it out"
            )


def preview_warnings(settings: Settings, *, existing_cluster: bool) -> list[str]:
    """Deployable but worth a second look: shown by `pulumi preview` and `pulumi up`."""
    warnings = []
    if not existing_cluster and any(
        ipaddress.ip_network(cidr).prefixlen == 0 for cidr in settings.api_public_access_cidrs
    ):
        warnings.append(
            f"config key '{PROJECT}:api_public_access_cidrs' lets the whole internet reach the "
            "Kubernetes API endpoint (credentials are still required); restrict it with "
            f"`pulumi config set --path '{PROJECT}:api_public_access_cidrs[0]' <your-ip>/32` "
            "(README: Restricting the API endpoint)"
        )
    return warnings


def model_versions(path: Path) -> list[int]:
    """The numeric version folders holding a saved_model.pb in a model base directory."""
    if not path.is_dir():
        return []
    return [int(child.name) for child in version_dirs(path) if (child / "saved_model.pb").is_file()]


def model_directory_problem(path: Path) -> str | None:
    """Why `path` is not a TF Serving model base directory, or None when it is one."""
    if not path.is_dir():
        return "is not a directory"
    if not model_versions(path):
        return "holds no <version>/saved_model.pb (export the model with scripts/convert_model.py)"
    return None


def api_keys_file(raw: str) -> str:
    """The gateway's API keys file (one key per line) from the config's JSON list of keys."""
    try:
        keys: Any = json.loads(raw)
    except json.JSONDecodeError:
        keys = None
    if (
        not isinstance(keys, list)
        or not keys
        or not all(isinstance(key, str) and _API_KEY.match(key) for key in keys)
    ):
        # The value is secret: the message never repeats it.
        raise ConfigError(
            f"invalid configuration:\n  config key '{PROJECT}:api_keys' must be a JSON list of "
            "keys of 16 to 256 printable characters without spaces, such as "
            '["3c1f...e9", "a84b...07"]'
        )
    return "".join(f"{key}\n" for key in keys)


@dataclass(frozen=True)
class Secrets:
    """Config values kept encrypted: never in Settings, only as secret Outputs."""

    kubeconfig: pulumi.Output[str] | None
    api_keys_file: pulumi.Output[str] | None


def load_settings() -> tuple[Settings, Secrets]:
    """Read and check this stack's config, with its secret values apart."""
    prefix = f"{PROJECT}:"
    all_config: Mapping[str, Any] = pulumi.runtime.config.CONFIG.get()
    values = {
        key.removeprefix(prefix): str(value)
        for key, value in all_config.items()
        if key.startswith(prefix)
    }
    plain = [
        key
        for key in sorted(SECRET_KEYS & set(values))
        if not pulumi.runtime.is_config_secret(f"{prefix}{key}")
    ]
    if plain:
        raise ConfigError(
            "invalid configuration:\n  "
            + "\n  ".join(
                f"config key '{prefix}{key}' must be stored encrypted: "
                f"pulumi config set --secret {prefix}{key} ..."
                for key in plain
            )
        )
    settings = parse_settings(
        values, stack=pulumi.get_stack(), region=pulumi.Config("aws").get("region")
    )
    config = pulumi.Config(PROJECT)
    keys = values.get("api_keys")
    secrets = Secrets(
        kubeconfig=config.get_secret("kubeconfig"),
        api_keys_file=pulumi.Output.secret(api_keys_file(keys)) if keys is not None else None,
    )
    return settings, secrets
