"""Every Kubernetes object the program declares, checked as a manifest; both Dockerfiles linted."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from clothing_infra.declared import Declared
from clothing_infra.settings import CLUSTER_AUTOSCALER_IMAGES
from kubernetes_validate.utils import all_versions, major_minor

from tests.infra.offline import run_offline
from tests.infra.support import PROJECT, REPO_ROOT, dev_stack_config

DOCKERFILES = [
    REPO_ROOT / "services" / "model" / "Dockerfile",
    REPO_ROOT / "services" / "gateway" / "Dockerfile",
]
VARIANTS = ["default", "gpu", "existing", "options"]
# Custom resources: kubernetes-validate has only the built-in kinds' schemas.
CUSTOM_KINDS = {"PodMonitor"}


def _schema_errors(objects: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for manifest in objects:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            errors.append(
                f"{manifest['kind']}/{manifest['metadata']['name']} {path}: {error.message}"
            )
    return errors


def test_kubernetes_validate_has_schemas_for_every_supported_version() -> None:
    bundled = {major_minor(version) for version in all_versions()}
    assert set(CLUSTER_AUTOSCALER_IMAGES) <= bundled
    assert dev_stack_config()[f"{PROJECT}:kubernetes_version"] in CLUSTER_AUTOSCALER_IMAGES


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_kubernetes_object_matches_the_schema_of_the_pinned_version(
    stacks: dict[str, Declared], variant: str
) -> None:
    objects = [o for o in stacks[variant].kubernetes_objects() if o["kind"] not in CUSTOM_KINDS]
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} <= kinds
    version = dev_stack_config()[f"{PROJECT}:kubernetes_version"]
    assert _schema_errors(objects, version) == []


def test_schema_validation_rejects_a_misspelt_field(default_stack: Declared) -> None:
    deployment = copy.deepcopy(default_stack.k8s("Deployment", "gateway"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    (error,) = _schema_errors([deployment], "1.35")
    assert "readinesProbe" in error


@pytest.fixture(scope="session")
def checkov_report(
    stacks: dict[str, Declared], tmp_path_factory: pytest.TempPathFactory, tools_bin: Path
) -> list[dict[str, Any]]:
    """One checkov run over every variant's manifests and both Dockerfiles."""
    directory = tmp_path_factory.mktemp("manifests")
    files = []
    for variant in VARIANTS:
        path = directory / f"{variant}.yaml"
        path.write_text(yaml.safe_dump_all(stacks[variant].kubernetes_objects(), sort_keys=False))
        files.append(path)
    command = [str(tools_bin / "checkov"), "--skip-download", "--output", "json", "--compact"]
    for path in [*files, *DOCKERFILES]:
        command += ["--file", str(path)]
    result = run_offline(command)
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    return report if isinstance(report, list) else [report]


def test_checkov_finds_no_failed_check(
    checkov_report: list[dict[str, Any]], stacks: dict[str, Declared]
) -> None:
    by_type = {report["check_type"]: report for report in checkov_report}
    assert set(by_type) == {"kubernetes", "dockerfile"}
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']})"
        for report in checkov_report
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert by_type["dockerfile"]["summary"]["resource_count"] == 2
    objects = [o for v in VARIANTS for o in stacks[v].kubernetes_objects()]
    # checkov also counts each workload's pod template as a resource.
    templates = [o for o in objects if "template" in o.get("spec", {})]
    assert by_type["kubernetes"]["summary"]["resource_count"] == len(objects) + len(templates)
    assert by_type["kubernetes"]["summary"]["passed"] > 500


def test_every_checkov_skip_is_written_in_place_with_a_reason(
    checkov_report: list[dict[str, Any]],
) -> None:
    skipped = [c for report in checkov_report for c in report["results"]["skipped_checks"]]
    assert skipped, "the third-party images' skips should be reported"
    for check in skipped:
        assert len(check["check_result"]["suppress_comment"].split()) >= 5, check
    resources = {check["resource"].split(".")[-1] for check in skipped}
    assert resources <= {"cluster-autoscaler", "nvidia-device-plugin"}


def test_hadolint_reports_nothing_on_either_dockerfile(tools_bin: Path) -> None:
    result = run_offline([str(tools_bin / "hadolint"), "--format", "json", *map(str, DOCKERFILES)])
    assert json.loads(result.stdout) == []
    assert result.returncode == 0


def test_hadolint_would_flag_a_latest_base_image(tmp_path: Path, tools_bin: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM python:latest\nUSER 10001\nCMD ["python"]\n')
    result = run_offline([str(tools_bin / "hadolint"), "--format", "json", str(dockerfile)])
    assert "DL3007" in {finding["code"] for finding in json.loads(result.stdout)}
