"""The server's typed settings: built once from the command line, read everywhere else."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PolicyKind = Literal["latest", "all", "specific"]


@dataclass(frozen=True)
class VersionPolicy:
    """Which numeric version folders under a base path are served (TF Serving's policy)."""

    kind: PolicyKind = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def aspired(self, present: list[int]) -> list[int]:
        """The versions to serve out of those present on disk, ascending."""
        ordered = sorted(present)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :] if self.num_versions > 0 else []


@dataclass(frozen=True)
class ModelConfig:
    """One served model: its name, base path, version policy and version labels."""

    name: str
    base_path: Path
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    version_labels: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingParameters:
    """The supported subset of TF Serving's `BatchingParameters`, with its defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    thread_pool_name: str = "model_server_batch_threads"


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start; see README.md for the matching flags."""

    models: tuple[ModelConfig, ...]
    grpc_port: int = 8500
    grpc_bind_address: str = "127.0.0.1"
    rest_api_port: int = 8501
    rest_api_bind_address: str = "127.0.0.1"
    enable_batching: bool = False
    batching: BatchingParameters = field(default_factory=BatchingParameters)
    file_system_poll_wait_seconds: int = 1
    enable_model_warmup: bool = True
    grpc_max_threads: int = 64
    allow_version_labels_for_unavailable_models: bool = False
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    monitoring_path: str | None = None
    grpc_shutdown_grace_seconds: float = 5.0
