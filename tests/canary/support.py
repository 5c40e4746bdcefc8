"""Model servers with different versions on their own loopback addresses, and gateways in
front of them: what a gateway sees during a rolling update or a canary rollout."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from clothing_tools.local_stack import (
    Running,
    common_free_port,
    stable_and_canary,
    start_gateway,
    start_model_server,
)
from tests.helpers import GATEWAY_PYTHON

PHOTOS_PER_CLASS = 3
DEMO_VERSION = 2


@dataclass(frozen=True)
class Versions:
    """Model base directories: the demo (2), reordered (3), reordered at 96x96 (4)."""

    demo: Path
    reordered: Path
    resized: Path

    def folder(self, version: int) -> Path:
        """The version's SavedModel folder."""
        base = {2: self.demo, 3: self.reordered, 4: self.resized}[version]
        return base / str(version)


@contextmanager
def model_server(host: str, base: Path, log: Path, config: Path | None = None) -> Iterator[Running]:
    """A development model server bound to `host` only."""
    with start_model_server(
        base,
        grpc_port=common_free_port([host]),
        rest_port=common_free_port([host]),
        python=sys.executable,
        log=log,
        host=host,
        model_config_file=config,
    ) as running:
        yield running


@contextmanager
def gateway(target: str, log: Path, **env: str) -> Iterator[Running]:
    """gunicorn + gateway (2 workers) from .venv-gateway, balancing round robin over `target`."""
    if not GATEWAY_PYTHON.exists():
        pytest.fail(f"{GATEWAY_PYTHON} is missing: run `make gateway-env`")
    settings = {
        "GATEWAY_ALLOW_PRIVATE_URLS": "true",
        "GATEWAY_WORKERS": "2",
        "GATEWAY_THREADS": "4",
        "GATEWAY_GRPC_LB_POLICY": "round_robin",
        "GATEWAY_RETRY_AFTER_SECONDS": "2",
        **env,
    }
    with start_gateway(
        tf_serving_host=target, port=common_free_port(["127.0.0.1"]), env=settings, log=log
    ) as running:
        yield running


@contextmanager
def rollout(first: Path, second: Path, logs: Path, name: str, **env: str) -> Iterator[Running]:
    """Two model servers (127.0.0.2: `first`, 127.0.0.3: `second`) behind one gateway."""
    with ExitStack() as stack:
        a = stack.enter_context(model_server("127.0.0.2", first, logs / f"{name}-a.log"))
        b = stack.enter_context(model_server("127.0.0.3", second, logs / f"{name}-b.log"))
        target = f"ipv4:{a.grpc_target},{b.grpc_target}"
        yield stack.enter_context(gateway(target, logs / f"{name}-gateway.log", **env))


@contextmanager
def labelled_server(
    stable: Path, canary: Path, workdir: Path, logs: Path, name: str, **env: str
) -> Iterator[Running]:
    """One model server with versions labelled stable and canary, and a gateway in front."""
    config = stable_and_canary(stable, canary, workdir, "clothing-model")
    with (
        model_server("127.0.0.2", workdir / "clothing-model", logs / f"{name}.log", config) as m,
        gateway(m.grpc_target, logs / f"{name}-gateway.log", **env) as running,
    ):
        yield running
