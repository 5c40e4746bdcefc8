"""The gateway pod's sizing as the Pulumi program declares it, read from the program itself.

The program runs under Pulumi's mocks (clothing_infra.declared, the dev stack's config)
and we read the gateway Deployment it declared: the container's memory limit, and the
GATEWAY_* environment (workers, threads, the downward-API memory limit). Reading the declared
manifest, not a Python constant, keeps working however infra/ arranges its declaration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from clothing_infra.declared import declare
from gateway.settings import Settings

_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip


def quantity_bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity ("768Mi", "1G", "805306368") in bytes."""
    match = re.fullmatch(r"(\d+)([kMGT]i?|)", str(quantity).strip())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class DeclaredSizing:
    """What the program gives the gateway container."""

    memory_limit: int
    workers: int
    threads: int
    memory_limit_from_downward_api: bool
    env: dict[str, str] = field(default_factory=dict)
    memory_limit_literal: str | None = None  # GATEWAY_MEMORY_LIMIT_BYTES given as a value

    def settings(self) -> Settings:
        """The gateway's settings in that container (its env, the limit as the pod sees it)."""
        env = {**self.env, "GATEWAY_MEMORY_LIMIT_BYTES": str(self.memory_limit)}
        return Settings.from_env(env)


def gateway_sizing(deployment: dict[str, Any]) -> DeclaredSizing:
    """The sizing of the `gateway` container of a declared Deployment manifest."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    container = next(c for c in containers if c["name"] == "gateway")
    limit = quantity_bytes(container["resources"]["limits"]["memory"])
    env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    refs = {e["name"]: e["valueFrom"] for e in container.get("env", []) if "valueFrom" in e}
    field_ref = refs.get("GATEWAY_MEMORY_LIMIT_BYTES", {}).get("resourceFieldRef", {})
    defaults = Settings()
    return DeclaredSizing(
        memory_limit=limit,
        workers=int(env.get("GATEWAY_WORKERS", defaults.workers)),
        threads=int(env.get("GATEWAY_THREADS", defaults.threads)),
        memory_limit_from_downward_api=field_ref.get("resource") == "limits.memory"
        and field_ref.get("containerName", "gateway") == "gateway",
        env={k: v for k, v in env.items() if k.startswith("GATEWAY_")},
        memory_limit_literal=env.get("GATEWAY_MEMORY_LIMIT_BYTES"),
    )


def declared_gateway_sizing() -> DeclaredSizing:
    """Run the Pulumi program (dev stack, mocks) and read the gateway Deployment's sizing."""
    return gateway_sizing(declare().k8s("Deployment", "gateway"))
