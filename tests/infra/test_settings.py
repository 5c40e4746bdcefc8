"""Config keys: defaults, the checks that fail a preview, and the project files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from clothing_infra.settings import (
    CLUSTER_AUTOSCALER_IMAGES,
    DEFAULTS,
    ConfigError,
    Settings,
    model_directory_problem,
    parse_settings,
)

from tests.infra.conftest import PROJECT, REPO_ROOT, dev_stack_config, write_model_layout


@pytest.fixture
def model_base(tmp_path: Path) -> Path:
    """A model base directory with one version."""
    return write_model_layout(tmp_path / "clothing-model")


def _parse(model_base: Path, **values: str) -> Settings:
    return parse_settings(
        {"model_path": str(model_base), **values}, stack="dev", region="eu-west-1"
    )


def _error(model_base: Path, **values: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _parse(model_base, **values)
    return str(caught.value)


def test_defaults(model_base: Path) -> None:
    settings = _parse(model_base)
    assert settings.kubernetes_version == "1.35"
    assert settings.cluster_name == "clothing-serving-dev"
    assert settings.gateway_pool.instance_type == "t3.medium"
    assert settings.model_pool.instance_type == "c6i.large"
    assert (settings.gateway_replicas.min, settings.gateway_replicas.max) == (2, 6)
    assert settings.gpu is False
    assert settings.tf_serving_tag == "2.21.0"
    assert settings.existing_cluster is False
    assert settings.cluster_autoscaler_image.endswith(":v1.35.2")


def test_gpu_picks_a_gpu_instance_and_image(model_base: Path) -> None:
    settings = _parse(model_base, gpu="true")
    assert settings.model_pool.instance_type == "g4dn.xlarge"
    assert settings.tf_serving_tag == "2.21.0-gpu"
    assert _parse(model_base, gpu="true", model_instance_type="g6.2xlarge").gpu


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        (
            {"gateway_replicas_min": "7", "gateway_replicas_max": "3"},
            "gateway_replicas_min",
            "above",
        ),
        ({"model_replicas_min": "9", "model_replicas_max": "4"}, "model_replicas_min", "above"),
        ({"model_nodes_min": "3", "model_nodes_desired": "2"}, "model_nodes_min", "above"),
        (
            {"gateway_nodes_desired": "5", "gateway_nodes_max": "3"},
            "gateway_nodes_desired",
            "above",
        ),
        (
            {"gpu": "true", "model_instance_type": "c6i.large"},
            "model_instance_type",
            "no NVIDIA GPU",
        ),
        (
            {"gpu": "true", "model_instance_type": "g5g.xlarge"},
            "model_instance_type",
            "no NVIDIA GPU",
        ),
        ({"gpu": "yes"}, "gpu", "true or false"),
        ({"model_path": "services/model/no-such-model"}, "model_path", "not a directory"),
        ({"kubernetes_version": "1.29"}, "kubernetes_version", "must be one of"),
        ({"gateway_replicas_max": "many"}, "gateway_replicas_max", "whole number"),
        ({"gateway_replicas_min": "0"}, "gateway_replicas_min", "between 1 and 100"),
        ({"availability_zone_count": "1"}, "availability_zone_count", "between 2 and 6"),
        ({"vpc_cidr": "10.0.0.0/8"}, "vpc_cidr", "/16 to /20"),
        ({"vpc_cidr": "ten"}, "vpc_cidr", "CIDR"),
        ({"gateway_instance_type": "large"}, "gateway_instance_type", "EC2 instance type"),
        ({"admin_role_arns": '["arn:aws:iam::12:role/x"]'}, "admin_role_arns", "not an IAM"),
        ({"admin_role_arns": "arn:aws:iam::123456789012:role/x"}, "admin_role_arns", "JSON list"),
        ({"api_public_access_cidrs": '["1.2.3.4/40"]'}, "api_public_access_cidrs", "not a CIDR"),
        ({"node_capacity_type": "RESERVED"}, "node_capacity_type", "ON_DEMAND or SPOT"),
        ({"namespace": "kube-apps"}, "namespace", "outside kube-"),
        ({"model_name": "Clothing Model"}, "model_name", "lowercase"),
        ({"gateway_replica_min": "2"}, "gateway_replica_min", "not a setting"),
    ],
)
def test_bad_values_name_their_key(
    model_base: Path, values: dict[str, str], key: str, words: str
) -> None:
    message = _error(model_base, **values)
    line = next(line for line in message.splitlines() if f"'{PROJECT}:{key}'" in line)
    assert words in line


def test_every_bad_key_is_reported_at_once(model_base: Path) -> None:
    message = _error(model_base, gpu="maybe", namespace="Bad", gateway_replicas_min="0")
    for key in ("gpu", "namespace", "gateway_replicas_min"):
        assert f"'{PROJECT}:{key}'" in message


def test_region_is_required(model_base: Path) -> None:
    with pytest.raises(ConfigError, match="'aws:region'"):
        parse_settings({"model_path": str(model_base)}, stack="dev", region=None)


def test_model_directory_needs_a_numbered_version_with_a_saved_model(tmp_path: Path) -> None:
    assert model_directory_problem(tmp_path / "missing") == "is not a directory"
    (tmp_path / "empty").mkdir()
    assert "no <version>/saved_model.pb" in str(model_directory_problem(tmp_path / "empty"))
    (tmp_path / "named" / "latest").mkdir(parents=True)
    (tmp_path / "named" / "latest" / "saved_model.pb").write_bytes(b"\x08")
    assert model_directory_problem(tmp_path / "named") is not None
    assert model_directory_problem(write_model_layout(tmp_path / "good")) is None


def test_existing_cluster_is_chosen_by_the_kubeconfig_key(model_base: Path) -> None:
    assert _parse(model_base, kubeconfig="apiVersion: v1").existing_cluster is True


# --- project files -------------------------------------------------------------------------


def test_pulumi_project_runs_infra_with_uv() -> None:
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT
    assert project["main"] == "infra/"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "uv"}}
    assert (REPO_ROOT / "infra" / "__main__.py").is_file()
    # The uv toolchain uses the .venv beside the nearest uv.lock: the project's own.
    assert (REPO_ROOT / "uv.lock").is_file()


def test_dev_stack_sets_known_keys_to_their_defaults_in_eu_west_1() -> None:
    config = dev_stack_config()
    assert config["aws:region"] == "eu-west-1"
    for key, value in config.items():
        if key.startswith(f"{PROJECT}:"):
            short = key.removeprefix(f"{PROJECT}:")
            assert short in DEFAULTS, key
            assert value == DEFAULTS[short], key


def test_dev_stack_model_path_is_the_committed_model() -> None:
    path = REPO_ROOT / dev_stack_config()[f"{PROJECT}:model_path"]
    assert model_directory_problem(path) is None


def test_readme_documents_every_key_with_its_default() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("<!-- section:deploy -->")[1].split("<!-- /section:deploy -->")[0]
    rows = dict(re.findall(r"^\| `([a-z_:]+)` \| ([^|]+) \|", section, re.MULTILINE))
    for key, default in DEFAULTS.items():
        assert key in rows, f"{key} missing from the README's config table"
        if default is not None and not default.startswith("["):
            assert f"`{default}`" in rows[key], key
    assert "aws:region" in rows
    for version in CLUSTER_AUTOSCALER_IMAGES:
        assert version in section
