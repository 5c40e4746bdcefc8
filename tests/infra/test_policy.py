"""The policy pack's rules on what the program declares, and the pack's pulumi-policy wiring."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from clothing_infra.declared import Declared
from policy import rules

from tests.infra.support import INFRA

PACK = INFRA / "policy"


def _violations(stack: Declared) -> dict[str, dict[str, list[str]]]:
    found = {}
    for resource in stack.resources:
        problems = rules.all_violations(resource["type"], resource["inputs"])
        if problems:
            found[resource["name"]] = problems
    return found


@pytest.mark.parametrize("variant", ["default", "gpu", "existing", "options"])
def test_the_program_meets_every_rule(stacks: dict[str, Declared], variant: str) -> None:
    assert _violations(stacks[variant]) == {}


def _resource(stack: Declared, resource_type: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(stack.one(resource_type, name))


def _pod(resource: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = resource["inputs"]["spec"]["template"]["spec"]
    return pod


def _writable_root(resource: dict[str, Any]) -> None:
    _pod(resource)["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False


def _escalating(resource: dict[str, Any]) -> None:
    del _pod(resource)["containers"][0]["securityContext"]["allowPrivilegeEscalation"]


def _root_user(resource: dict[str, Any]) -> None:
    _pod(resource)["containers"][0]["securityContext"]["runAsUser"] = 0


def _token_mounted(resource: dict[str, Any]) -> None:
    del _pod(resource)["automountServiceAccountToken"]


def _no_limits(resource: dict[str, Any]) -> None:
    del _pod(resource)["containers"][0]["resources"]["limits"]


def _exposed(resource: dict[str, Any]) -> None:
    # Its gRPC port only: the REST port would also be caught as a metrics port.
    resource["inputs"]["spec"]["type"] = "LoadBalancer"
    spec = resource["inputs"]["spec"]
    spec["ports"] = [port for port in spec["ports"] if port["name"] == "grpc"]


def _metrics_exposed(resource: dict[str, Any]) -> None:
    resource["inputs"]["spec"]["ports"].append(
        {"name": "metrics", "port": 9697, "targetPort": "metrics", "protocol": "TCP"}
    )


def _hop_limit_2(resource: dict[str, Any]) -> None:
    resource["inputs"]["metadataOptions"]["httpPutResponseHopLimit"] = 2


def _imds_v1(resource: dict[str, Any]) -> None:
    resource["inputs"]["metadataOptions"]["httpTokens"] = "optional"


def _pulumi_eks_imds(resource: dict[str, Any]) -> None:
    del resource["inputs"]["launchTemplate"]
    resource["inputs"]["enableImdSv2"] = True


def _mutable(resource: dict[str, Any]) -> None:
    resource["inputs"]["imageTagMutability"] = "MUTABLE"


def _unscanned(resource: dict[str, Any]) -> None:
    resource["inputs"]["imageScanningConfiguration"] = {"scanOnPush": False}


def _unexempted(resource: dict[str, Any]) -> None:
    del resource["inputs"]["metadata"]["annotations"][rules.EXEMPTION_ANNOTATION]


DEPLOYMENT = "kubernetes:apps/v1:Deployment"
TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
REPOSITORY = "aws:ecr/repository:Repository"
IMDS = "nodes-imdsv2-hop-limit-1"
ECR = "ecr-immutable-and-scanned"


class Breakage(NamedTuple):
    """A declared resource, a way to break it, and the rule and words that must catch it."""

    variant: str
    resource_type: str
    name: str
    breakage: Callable[[dict[str, Any]], None]
    rule: str
    message: str


BREAKAGES = [
    Breakage("default", DEPLOYMENT, "model-serving-deployment", _writable_root,
             "pods-restricted", "readOnlyRootFilesystem"),
    Breakage("default", DEPLOYMENT, "gateway-deployment", _escalating,
             "pods-restricted", "allowPrivilegeEscalation"),
    Breakage("default", DEPLOYMENT, "cluster-autoscaler-deployment", _root_user,
             "pods-restricted", "UID 0"),
    Breakage("default", DEPLOYMENT, "gateway-deployment", _token_mounted,
             "no-unused-service-account-tokens", "automountServiceAccountToken"),
    Breakage("default", DEPLOYMENT, "model-serving-deployment", _no_limits,
             "containers-set-resources", "limits lack cpu, memory"),
    Breakage("default", "kubernetes:core/v1:Service", "model-serving-headless", _exposed,
             "only-gateway-is-public", "tf-serving-headless"),
    Breakage("default", "kubernetes:core/v1:Service", "gateway-lb", _metrics_exposed,
             "no-public-metrics", "metrics port 'metrics'"),
    Breakage("default", TEMPLATE, "cluster-model", _hop_limit_2, IMDS, "httpPutResponseHopLimit"),
    Breakage("default", TEMPLATE, "cluster-gateway", _imds_v1, IMDS, "httpTokens"),
    Breakage("default", "eks:index:ManagedNodeGroup", "cluster-gateway", _pulumi_eks_imds,
             IMDS, "hop limit of 2"),
    Breakage("default", REPOSITORY, "images-registry-clothing-serving-dev-model", _mutable,
             ECR, "IMMUTABLE"),
    Breakage("default", REPOSITORY, "images-registry-clothing-serving-dev-gateway", _unscanned,
             ECR, "scan on push"),
    Breakage("gpu", "kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin-daemonset", _unexempted,
             "pods-restricted", "host path"),
]  # fmt: skip


@pytest.mark.parametrize(
    "case", BREAKAGES, ids=[f"{b.name}-{b.breakage.__name__.strip('_')}" for b in BREAKAGES]
)
def test_each_rule_flags_a_broken_copy_of_a_declared_resource(
    stacks: dict[str, Declared], case: Breakage
) -> None:
    resource = _resource(stacks[case.variant], case.resource_type, case.name)
    assert rules.all_violations(case.resource_type, resource["inputs"]) == {}
    case.breakage(resource)
    found = rules.all_violations(case.resource_type, resource["inputs"])
    assert set(found) == {case.rule}
    assert any(case.message in problem for problem in found[case.rule]), found


def test_an_internal_load_balancer_is_not_public() -> None:
    service: dict[str, Any] = {
        "metadata": {
            "name": "metrics",
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"},
        },
        "spec": {"type": "LoadBalancer"},
    }
    assert rules.public_service_violations("kubernetes:core/v1:Service", service) == []
    del service["metadata"]["annotations"]
    assert rules.public_service_violations("kubernetes:core/v1:Service", service) != []


def test_the_exemption_needs_kube_system_and_a_reason(gpu_stack: Declared) -> None:
    plugin = _resource(gpu_stack, "kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin-daemonset")
    inputs = plugin["inputs"]
    assert rules.restricted_pod_violations(plugin["type"], inputs) == []
    inputs["metadata"]["annotations"][rules.EXEMPTION_ANNOTATION] = " "
    assert rules.restricted_pod_violations(plugin["type"], inputs) != []
    inputs["metadata"]["annotations"][rules.EXEMPTION_ANNOTATION] = "because"
    inputs["metadata"]["namespace"] = "clothing"
    assert rules.restricted_pod_violations(plugin["type"], inputs) != []


# --- the pack as pulumi-policy runs it -------------------------------------------------------


def test_policy_pack_project_file() -> None:
    project = yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert (PACK / "__main__.py").is_file()
    requirements = (PACK / "requirements.txt").read_text()
    assert "pulumi-policy==1.21.0" in requirements
    assert "--hash=sha256:" in requirements


def _run_pack(resources: list[dict[str, Any]], tmp_path: Path, tools_bin: Path) -> dict[str, Any]:
    path = tmp_path / "resources.json"
    path.write_text(json.dumps(resources))
    result = subprocess.run(
        [str(tools_bin / "python"), str(Path(__file__).with_name("pack_harness.py")), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


def test_pulumi_policy_runs_the_rules_on_the_declared_resources(
    stacks: dict[str, Declared], tmp_path: Path, tools_bin: Path
) -> None:
    declared = [r for variant in stacks.values() for r in variant.resources]
    broken = _resource(stacks["default"], "aws:ec2/launchTemplate:LaunchTemplate", "cluster-model")
    _hop_limit_2(broken)
    broken["name"] = "broken-template"
    exposed = _resource(stacks["default"], "kubernetes:core/v1:Service", "model-serving-headless")
    _exposed(exposed)
    exposed["name"] = "exposed-service"
    outcome = _run_pack([*declared, broken, exposed], tmp_path, tools_bin)
    assert outcome["pack"] == {
        "name": "clothing-serving-security",
        "enforcement": "mandatory",
        "policies": list(rules.RULES),
    }
    assert [p["name"] for p in outcome["policies"]] == list(rules.RULES)
    assert {p["enforcement"] for p in outcome["policies"]} == {"mandatory"}
    assert sorted((v[0], v[1]) for v in outcome["violations"]) == [
        ("nodes-imdsv2-hop-limit-1", "broken-template"),
        ("only-gateway-is-public", "exposed-service"),
    ]
