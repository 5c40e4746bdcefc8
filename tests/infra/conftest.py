"""Run the Pulumi program under mocks once per stack variant and share what it declared."""

from __future__ import annotations

from pathlib import Path

import pytest
from clothing_infra.declared import Declared, finish

from tests.infra.support import (
    TOOLS_BIN,
    run_program,
    variant_configs,
    write_model_layout,
)


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


@pytest.fixture(scope="session")
def canary_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model base directory, with version 3."""
    return write_model_layout(tmp_path_factory.mktemp("canary") / "clothing-model", version=3)


@pytest.fixture(scope="session")
def stacks(model_dir: Path, canary_dir: Path) -> dict[str, Declared]:
    """Each variant's declarations, from runs made side by side in separate processes."""
    started = {
        name: run_program(config) for name, config in variant_configs(model_dir, canary_dir).items()
    }
    return {name: finish(process) for name, process in started.items()}


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


@pytest.fixture(scope="session")
def options_stack(stacks: dict[str, Declared]) -> Declared:
    """The dev stack with HTTPS, API keys, a PodMonitor, a canary and an aws:profile."""
    return stacks["options"]
