"""What the stack benchmarks share: settings, model, running servers, work folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from local_stack import Running

from benchmarks.config import BenchSettings, Model
from benchmarks.photos import Photo, PhotoServer
from benchmarks.stack import Gateway

SEED_MODEL_NAME = "clothing-seed"
BATCHABLE_MODEL_NAME = "clothing-batchable"


@dataclass(frozen=True)
class Stack:
    """The model server (no batching; the demo model and its two twins, see twins.py) and the
    photo server, started once for B2-B5."""

    settings: BenchSettings
    model: Model
    work: Path
    model_server: Running
    photo_server: PhotoServer
    photos: list[Photo]
    bodies: Path  # one {"url": ...} per line, for wrk

    def batchable_env(self) -> dict[str, str]:
        """Gateway settings for the batchable twin, which has no `describe` signature."""
        model = self.model
        return {
            "GATEWAY_MODEL_NAME": BATCHABLE_MODEL_NAME,
            "GATEWAY_LABELS": ",".join(model.labels),
            "GATEWAY_RESIZE_INTERPOLATION": model.interpolation,
            "GATEWAY_JPEG_DRAFT": "true" if model.jpeg_draft else "false",
        }

    def log(self, name: str) -> Path:
        """A log file of the work folder."""
        return self.work / "logs" / f"{name}.log"

    def urls(self) -> list[str]:
        """The photo URLs on the loopback photo server."""
        return [f"{self.photo_server.url}/{photo.relative}" for photo in self.photos]

    def watch(self, gateway: Gateway, model_server: Running | None = None) -> dict[str, int]:
        """The processes whose CPU a load run records."""
        return {
            "gateway": gateway.pid,
            "model server": (model_server or self.model_server).process.pid,
            "photo server": self.photo_server.pid,
        }
