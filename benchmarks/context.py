"""What the stack benchmarks share: settings, model, running servers, work folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.config import BenchSettings, Model
from benchmarks.load import LoadResult, run_wrk
from benchmarks.photos import Photo, PhotoServer
from benchmarks.stack import Gateway
from clothing_tools.local_stack import Running

SEED_MODEL_NAME = "clothing-seed"


@dataclass(frozen=True)
class Stack:
    """The model server (server-side batching on, as deployed; the demo model and its seed
    twin, see twins.py) and the photo server, started once for B2-B5."""

    settings: BenchSettings
    model: Model
    work: Path
    model_server: Running
    photo_server: PhotoServer
    photos: list[Photo]
    bodies: Path  # one {"url": ...} per line, for wrk

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

    def load(
        self,
        gateway: Gateway,
        clients: int,
        *,
        path: str = "/predict",
        bodies: Path | None = None,
        duration: float | None = None,
        model_server: Running | None = None,
    ) -> LoadResult:
        """wrk against one of the gateway's endpoints for the bench's duration (after its
        warm-up), recording the CPU of the gateway, the model server and the photo server."""
        return run_wrk(
            f"{gateway.url}{path}",
            bodies or self.bodies,
            clients,
            self.settings.duration if duration is None else duration,
            warmup=self.settings.warmup,
            watch=self.watch(gateway, model_server),
        )
