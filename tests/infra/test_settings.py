"""Config keys: defaults, the checks that fail a preview, and the project files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from clothing_infra.settings import (
    CLUSTER_AUTOSCALER_IMAGES,
    DEFAULTS,
    GPU_FAMILIES,
    ConfigError,
    Settings,
    accelerator,
    admins_exclude_deployer,
    api_keys_file,
    model_directory_problem,
    parse_settings,
    preview_warnings,
)

from tests.infra.support import PROJECT, REPO_ROOT, dev_stack_config, write_model_layout


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
    assert settings.tls_certificate_arn is None
    assert settings.monitoring_namespace == "monitoring"
    assert (settings.canary_model_path, settings.canary_percent, settings.shadow_percent) == (
        None,
        0.0,
        0.0,
    )
    assert (settings.gateway_pool.min_size, settings.gateway_pool.desired_size) == (2, 2)
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
        ({"canary_percent": "-1"}, "canary_percent", "from 0 to 100"),
        ({"shadow_percent": "100.5"}, "shadow_percent", "from 0 to 100"),
        ({"canary_percent": "ten"}, "canary_percent", "a number"),
        ({"canary_percent": "5"}, "canary_percent", "canary_model_path' is not set"),
        ({"shadow_percent": "5"}, "shadow_percent", "canary_model_path' is not set"),
        ({"canary_model_path": "no/such/dir"}, "canary_model_path", "not a directory"),
        ({"tls_certificate_arn": "arn:aws:iam::123456789012:x"}, "tls_certificate_arn", "ACM"),
        ({"monitoring_namespace": "Mon"}, "monitoring_namespace", "namespace name"),
        ({"pod_monitor": "1"}, "pod_monitor", "true or false"),
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


def test_canary_must_be_a_newer_version_than_stable(model_base: Path, tmp_path: Path) -> None:
    # model_base holds version 1.
    newer = write_model_layout(tmp_path / "v3", version=3)
    settings = _parse(model_base, canary_model_path=str(newer), canary_percent="10")
    assert (settings.stable_version, settings.canary_version) == (1, 3)
    assert settings.canary_percent == 10.0
    same = write_model_layout(tmp_path / "v1", version=1)
    message = _error(model_base, canary_model_path=str(same))
    assert f"'{PROJECT}:canary_model_path' holds version 1, not above model_path's 1" in message


def test_shadow_and_canary_traffic_together_are_refused(model_base: Path, tmp_path: Path) -> None:
    newer = write_model_layout(tmp_path / "v2", version=2)
    message = _error(
        model_base, canary_model_path=str(newer), canary_percent="10", shadow_percent="50"
    )
    assert f"'{PROJECT}:shadow_percent' is 50 while '{PROJECT}:canary_percent' is 10" in message
    assert _parse(model_base, canary_model_path=str(newer), shadow_percent="100").shadow_percent


def test_api_keys_become_a_file_of_one_key_per_line() -> None:
    assert api_keys_file('["k3y-one-0123456789abcdef", "k3y-two-fedcba9876543210"]') == (
        "k3y-one-0123456789abcdef\nk3y-two-fedcba9876543210\n"
    )
    for bad in ("[]", '["short"]', '["has a space 0123456789"]', "k3y-one-0123456789abcdef"):
        with pytest.raises(ConfigError) as caught:
            api_keys_file(bad)
        assert f"'{PROJECT}:api_keys'" in str(caught.value)
        assert "0123456789" not in str(caught.value)  # a secret value is never echoed


def test_an_open_api_endpoint_is_a_preview_warning(model_base: Path) -> None:
    (warning,) = preview_warnings(_parse(model_base), existing_cluster=False)
    assert f"'{PROJECT}:api_public_access_cidrs'" in warning
    restricted = _parse(model_base, api_public_access_cidrs='["203.0.113.7/32"]')
    assert preview_warnings(restricted, existing_cluster=False) == []
    # In an existing cluster the key is unused.
    assert preview_warnings(_parse(model_base), existing_cluster=True) == []


def test_every_gpu_family_has_an_accelerator_label() -> None:
    for family in GPU_FAMILIES:
        assert accelerator(f"{family}.xlarge").startswith("nvidia-")
    assert accelerator("g4dn.xlarge") == "nvidia-tesla-t4"


@pytest.mark.parametrize(
    ("admin", "caller"),
    [
        (
            "arn:aws:iam::123456789012:role/deployer",
            "arn:aws:sts::123456789012:assumed-role/deployer/ci-42",
        ),
        (
            "arn:aws:iam::123456789012:role/team/deployer",
            "arn:aws:sts::123456789012:assumed-role/deployer/ci-42",
        ),
        ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
    ],
)
def test_the_deployer_cannot_be_an_extra_admin(admin: str, caller: str) -> None:
    with pytest.raises(ConfigError) as caught:
        admins_exclude_deployer([admin], caller)
    assert f"'{PROJECT}:admin_role_arns' holds {admin!r}" in str(caught.value)


def test_other_admins_are_accepted() -> None:
    admins_exclude_deployer(
        [
            "arn:aws:iam::123456789012:role/platform-admins",
            "arn:aws:iam::210987654321:role/deployer",
            "arn:aws:iam::123456789012:user/deployer",
        ],
        "arn:aws:sts::123456789012:assumed-role/deployer/ci-42",
    )


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
