"""Security rules as plain functions of (resource type, input properties) -> violations.

Properties are the camelCase inputs Pulumi records (what `pulumi-policy` passes as
`args.props`); they may be Mapping/Sequence proxies, so nothing here assumes dict or list.
Importable without pulumi_policy so tests can run them on what the program declares.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

EXEMPTION_ANNOTATION = "clothing-serving/pod-security-exemption"
SYSTEM_NAMESPACE = "kube-system"
PUBLIC_SERVICES = frozenset({"gateway"})
# The gateway's /metrics port and TF Serving's REST port (which also serves its metrics).
METRICS_PORTS = frozenset({9697, 8501})
_WORKLOADS = {
    "kubernetes:apps/v1:Deployment": ("spec", "template"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template"),
    "kubernetes:batch/v1:Job": ("spec", "template"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template"),
    "kubernetes:core/v1:Pod": (),
}
_SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> Sequence[Any]:
    return value if isinstance(value, Sequence) and not isinstance(value, str) else ()


def _dig(value: Any, path: Sequence[str]) -> Mapping[str, Any]:
    for key in path:
        value = _map(value).get(key)
    return _map(value)


def _pod(resource_type: str, props: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(workload name, pod template) of a pod-bearing Kubernetes resource."""
    path = _WORKLOADS.get(resource_type)
    if path is None:
        return None
    name = str(_map(props.get("metadata")).get("name", "?"))
    return name, _dig(props, path) if path else props


def _containers(pod_spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in _seq(pod_spec.get(key)):
            yield _map(container)


def _exempt(props: Mapping[str, Any]) -> bool:
    metadata = _map(props.get("metadata"))
    reason = _map(metadata.get("annotations")).get(EXEMPTION_ANNOTATION)
    return metadata.get("namespace") == SYSTEM_NAMESPACE and bool(str(reason or "").strip())


def restricted_pod_violations(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Pods must meet Pod Security `restricted`, with a read-only root filesystem.

    A kube-system add-on may be exempted by an annotation that states why.
    """
    found = _pod(resource_type, props)
    if found is None or _exempt(props):
        return []
    name, template = found
    spec = _map(template.get("spec"))
    pod_context = _map(spec.get("securityContext"))
    problems = [
        f"{name}: {field} must not be true"
        for field in ("hostNetwork", "hostPID", "hostIPC")
        if spec.get(field) is True
    ]
    problems += [
        f"{name}: volume {_map(volume).get('name')} mounts a host path"
        for volume in _seq(spec.get("volumes"))
        if _map(volume).get("hostPath") is not None
    ]
    for container in _containers(spec):
        context = _map(container.get("securityContext"))
        label = f"{name}/{container.get('name')}"
        if context.get("privileged") is True:
            problems.append(f"{label}: must not be privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{label}: allowPrivilegeEscalation must be false")
        capabilities = _map(context.get("capabilities"))
        if "ALL" not in _seq(capabilities.get("drop")):
            problems.append(f"{label}: capabilities must drop ALL")
        added = set(_seq(capabilities.get("add"))) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"{label}: adds capabilities {sorted(added)}")
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{label}: runAsNonRoot must be true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"{label}: must not run as UID 0")
        seccomp = _map(context.get("seccompProfile")) or _map(pod_context.get("seccompProfile"))
        if seccomp.get("type") not in _SECCOMP_OK:
            problems.append(f"{label}: seccompProfile must be RuntimeDefault or Localhost")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{label}: readOnlyRootFilesystem must be true")
    return problems


def service_account_token_violations(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Application pods (outside kube-system) must not mount a service account token."""
    found = _pod(resource_type, props)
    namespace = _map(props.get("metadata")).get("namespace")
    if found is None or namespace == SYSTEM_NAMESPACE:
        return []
    name, template = found
    if _map(template.get("spec")).get("automountServiceAccountToken") is not False:
        return [f"{name}: set automountServiceAccountToken: false (the app never calls the API)"]
    return []


def resource_violations(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Every container must request and limit CPU and memory."""
    found = _pod(resource_type, props)
    if found is None:
        return []
    name, template = found
    problems = []
    for container in _containers(_map(template.get("spec"))):
        resources = _map(container.get("resources"))
        for kind in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in _map(resources.get(kind))]
            if missing:
                problems.append(f"{name}/{container.get('name')}: {kind} lack {', '.join(missing)}")
    return problems


def public_service_violations(
    resource_type: str, props: Mapping[str, Any], allowed: frozenset[str] = PUBLIC_SERVICES
) -> list[str]:
    """Only the gateway Service may be reachable from outside the cluster."""
    if resource_type != "kubernetes:core/v1:Service":
        return []
    metadata = _map(props.get("metadata"))
    spec = _map(props.get("spec"))
    name = str(metadata.get("name", "?"))
    annotations = _map(metadata.get("annotations"))
    internal = (
        annotations.get("service.beta.kubernetes.io/aws-load-balancer-internal") == "true"
        or annotations.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal"
    )
    exposed = (
        (spec.get("type") == "LoadBalancer" and not internal)
        or spec.get("type") == "NodePort"
        or bool(_seq(spec.get("externalIPs")))
    )
    if exposed and name not in allowed:
        return [
            f"Service {name} is reachable from outside the cluster; only {sorted(allowed)} may be"
        ]
    return []


def public_metrics_violations(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """No Service reachable from outside the cluster may forward to a metrics port."""
    if resource_type != "kubernetes:core/v1:Service" or not public_service_violations(
        resource_type, props, allowed=frozenset()
    ):
        return []
    name = str(_map(props.get("metadata")).get("name", "?"))
    return [
        f"Service {name} exposes metrics port {_map(port).get('targetPort')!r}; metrics are "
        "for in-cluster scraping only"
        for port in _seq(_map(props.get("spec")).get("ports"))
        if "metrics" in str(_map(port).get("targetPort", "")) + str(_map(port).get("name", ""))
        or _map(port).get("targetPort") in METRICS_PORTS
        or _map(port).get("port") in METRICS_PORTS
    ]


def imds_violations(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Nodes must require IMDSv2 with a hop limit of 1, set through a launch template."""
    if resource_type == "aws:ec2/launchTemplate:LaunchTemplate":
        options = _map(props.get("metadataOptions"))
        problems = []
        if options.get("httpTokens") != "required":
            problems.append("launch template must set metadataOptions.httpTokens to required")
        if options.get("httpPutResponseHopLimit") != 1:
            problems.append("launch template must set metadataOptions.httpPutResponseHopLimit to 1")
        return problems
    if resource_type == "eks:index:ManagedNodeGroup":
        problems = []
        if props.get("enableImdSv2") is True:
            problems.append("enableImdSv2 sets a hop limit of 2; use a launch template instead")
        if not props.get("launchTemplate"):
            problems.append("managed node group must use a launch template that sets IMDS options")
        return problems
    if resource_type == "aws:eks/nodeGroup:NodeGroup" and not props.get("launchTemplate"):
        return ["node group must use a launch template that sets IMDS options"]
    return []


def repository_violations(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """ECR repositories must have immutable tags and scan images on push."""
    if resource_type != "aws:ecr/repository:Repository":
        return []
    problems = []
    if props.get("imageTagMutability") != "IMMUTABLE":
        problems.append("ECR repository must set imageTagMutability to IMMUTABLE")
    if _map(props.get("imageScanningConfiguration")).get("scanOnPush") is not True:
        problems.append("ECR repository must scan on push")
    return problems


RULES = {
    "pods-restricted": restricted_pod_violations,
    "no-unused-service-account-tokens": service_account_token_violations,
    "containers-set-resources": resource_violations,
    "only-gateway-is-public": public_service_violations,
    "no-public-metrics": public_metrics_violations,
    "nodes-imdsv2-hop-limit-1": imds_violations,
    "ecr-immutable-and-scanned": repository_violations,
}


def all_violations(resource_type: str, props: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every rule's violations for one resource (rules without any are left out)."""
    found = {name: rule(resource_type, props) for name, rule in RULES.items()}
    return {name: problems for name, problems in found.items() if problems}
