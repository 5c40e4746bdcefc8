"""What the infra tests share: paths, stack configs, running the program, manifest helpers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clothing_infra.declared import ProgramError, dev_config, finish, start

REPO_ROOT = Path(__file__).resolve().parents[2]


INFRA = REPO_ROOT / "infra"


TOOLS_BIN = REPO_ROOT / ".venv-tools" / "bin"


PROJECT = "clothing-serving"


EXISTING_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: elsewhere
  cluster: {server: "https://kubernetes.example.invalid", certificate-authority-data: Cg==}
contexts:
- name: elsewhere
  context: {cluster: elsewhere, user: deployer}
current-context: elsewhere
users:
- name: deployer
  user: {token: not-a-real-token}
"""


API_KEYS = ["k3y-one-0123456789abcdef", "k3y-two-fedcba9876543210"]


CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/0b5e8c1a-7e55-4c33-9a10-2f1d6f0c9e11"


def dev_stack_config() -> dict[str, str]:
    """The config of Pulumi.dev.yaml, as `pulumi config` hands it to the program."""
    return dev_config()


def write_model_layout(base: Path, version: int = 1) -> Path:
    """A TF Serving model base directory with one version (contents are not read)."""
    directory = base / str(version)
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(b"\x08\x01")
    (directory / "variables" / "variables.index").write_bytes(b"index")
    return base


def run_program(config: dict[str, str], *, preview: bool = False) -> subprocess.Popen[str]:
    """Start the program under mocks in a fresh interpreter (as `pulumi` would: cwd infra/)."""
    return start(config, preview=preview)


def failure(process: subprocess.Popen[str]) -> str:
    """The message of a run expected to fail."""
    with pytest.raises(ProgramError) as caught:
        finish(process)
    return str(caught.value)


def variant_configs(model_dir: Path, canary_dir: Path) -> dict[str, dict[str, str]]:
    """The dev stack, and variants: GPUs, an existing cluster, every option on."""
    base = {**dev_stack_config(), f"{PROJECT}:model_path": str(model_dir)}
    return {
        "default": base,
        "gpu": {**base, f"{PROJECT}:gpu": "true"},
        "existing": {**base, f"{PROJECT}:kubeconfig": EXISTING_KUBECONFIG},
        "options": {
            **base,
            f"{PROJECT}:tls_certificate_arn": CERTIFICATE,
            f"{PROJECT}:api_keys": json.dumps(API_KEYS),
            f"{PROJECT}:pod_monitor": "true",
            f"{PROJECT}:canary_model_path": str(canary_dir),
            f"{PROJECT}:canary_percent": "10",
            f"{PROJECT}:api_public_access_cidrs": '["203.0.113.7/32"]',
            "aws:profile": "deployer-profile",
        },
    }


def containers(pod_owner: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Containers of a Deployment or DaemonSet manifest."""
    yield from pod_owner["spec"]["template"]["spec"]["containers"]
