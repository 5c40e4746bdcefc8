"""Run the Pulumi program under mocks once per stack variant and share what it declared."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
RUNNER = Path(__file__).resolve().parent / "program_runner.py"
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


def dev_stack_config() -> dict[str, str]:
    """The config of Pulumi.dev.yaml, as `pulumi config` hands it to the program."""
    document = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())
    return {key: str(value) for key, value in document["config"].items()}


def write_model_layout(base: Path) -> Path:
    """A TF Serving model base directory with version 1 (contents are not read by the program)."""
    version = base / "1"
    (version / "variables").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"\x08\x01")
    (version / "variables" / "variables.index").write_bytes(b"index")
    return base


@dataclass
class Declared:
    """What one run of the program declared: every resource registration and the exports."""

    resources: list[dict[str, Any]]
    exports: dict[str, dict[str, Any]]

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        """Registrations of one Pulumi type token."""
        return [r for r in self.resources if r["type"] == resource_type]

    def one(self, resource_type: str, name: str | None = None) -> dict[str, Any]:
        """The single registration of a type (and name)."""
        found = [r for r in self.of_type(resource_type) if name is None or r["name"] == name]
        assert len(found) == 1, f"{resource_type} {name}: {[r['name'] for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> dict[str, Any]:
        """The registration with this URN."""
        return next(r for r in self.resources if r["urn"] == urn)

    def kubernetes_objects(self) -> list[dict[str, Any]]:
        """Every Kubernetes object declared, as the manifest the provider would apply."""
        return [
            normalise_numbers(r["inputs"])
            for r in self.resources
            if r["type"].startswith("kubernetes:") and r["custom"]
        ]

    def k8s(self, kind: str, name: str) -> dict[str, Any]:
        """One Kubernetes object by kind and metadata.name."""
        found = [
            o
            for o in self.kubernetes_objects()
            if o["kind"] == kind and o["metadata"]["name"] == name
        ]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def export(self, key: str) -> Any:
        """A stack output's value."""
        return self.exports[key]["value"]


def normalise_numbers(value: Any) -> Any:
    """Pulumi's wire format turns integers into floats; put whole numbers back as int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: normalise_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise_numbers(item) for item in value]
    return value


def run_program(
    config: dict[str, str], workdir: Path, *, preview: bool = False
) -> subprocess.Popen[str]:
    """Start the program under mocks in a fresh interpreter (as `pulumi` would: cwd infra/)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "config.json"
    config_file.write_text(json.dumps(config))
    command = [sys.executable, str(RUNNER), str(config_file), str(workdir / "declared.json")]
    if preview:
        command.append("--preview")
    return subprocess.Popen(
        command, cwd=INFRA, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen[str], workdir: Path) -> Declared:
    """Wait for a run started by run_program and load what it declared."""
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    data = json.loads((workdir / "declared.json").read_text())
    return Declared(data["resources"], data["exports"])


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    """.venv-tools/bin (checkov, hadolint, pulumi-policy), made by `make tools-env`."""
    if not (TOOLS_BIN / "checkov").exists():
        pytest.fail(f"{TOOLS_BIN} lacks checkov: run `make tools-env` (make test does)")
    return TOOLS_BIN


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model base directory in TF Serving's layout, outside the repository."""
    return write_model_layout(tmp_path_factory.mktemp("model") / "clothing-model")


def variant_configs(model_dir: Path) -> dict[str, dict[str, str]]:
    """The dev stack, the dev stack with GPUs, and the dev stack in an existing cluster."""
    base = {**dev_stack_config(), f"{PROJECT}:model_path": str(model_dir)}
    return {
        "default": base,
        "gpu": {**base, f"{PROJECT}:gpu": "true"},
        "existing": {**base, f"{PROJECT}:kubeconfig": EXISTING_KUBECONFIG},
    }


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Declared]:
    """Each variant's declarations, from runs made side by side in separate processes."""
    root = tmp_path_factory.mktemp("stacks")
    started = {
        name: (run_program(config, root / name), root / name)
        for name, config in variant_configs(model_dir).items()
    }
    return {name: finish(process, workdir) for name, (process, workdir) in started.items()}


@pytest.fixture(scope="session")
def default_stack(stacks: dict[str, Declared]) -> Declared:
    """The dev stack as `pulumi up` would declare it."""
    return stacks["default"]


@pytest.fixture(scope="session")
def gpu_stack(stacks: dict[str, Declared]) -> Declared:
    """The dev stack with gpu=true."""
    return stacks["gpu"]


@pytest.fixture(scope="session")
def existing_stack(stacks: dict[str, Declared]) -> Declared:
    """The dev stack deploying into an existing cluster from its kubeconfig."""
    return stacks["existing"]


def containers(pod_owner: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Containers of a Deployment or DaemonSet manifest."""
    yield from pod_owner["spec"]["template"]["spec"]["containers"]
