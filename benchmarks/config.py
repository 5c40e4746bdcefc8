"""Where things are and how long each measurement runs: one typed settings object per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway import contract
from gateway.contract import ResizeSpec

REPO = Path(__file__).resolve().parents[1]
GATEWAY_DIR = REPO / "services" / "gateway"
DEFAULT_MODEL_BASE = REPO / "services" / "model" / "clothing-model"
DEFAULT_DATASET = REPO.parent / "shared" / "clothing-dataset-small"
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"
GATEWAY_VENV = REPO / ".venv-gateway"
SEED_VENV = REPO / ".venv-seed"
BATCHING_PARAMETERS = REPO / "services" / "model" / "batching_parameters.txt"
SEED_SIZE = 299  # the seed's Xception input


class BenchError(Exception):
    """A benchmark cannot run (missing model, environment or tool); one line, exit code 2."""


@dataclass(frozen=True)
class Model:
    """The served model under test, read from its contract description."""

    name: str
    base_path: Path
    version_dir: Path
    height: int
    width: int
    interpolation: str
    jpeg_draft: bool
    labels: tuple[str, ...]

    @property
    def spec(self) -> ResizeSpec:
        """How the gateway resizes photos for this model."""
        return ResizeSpec(self.height, self.width, self.interpolation, self.jpeg_draft)

    @classmethod
    def load(cls, base_path: Path) -> Model:
        """The latest version under `base_path` and its `model_description.json`."""
        try:
            version_dir = contract.latest_version_dir(base_path)
        except contract.ContractError:
            raise BenchError(
                f"no model version folder under {base_path}; export one with "
                "scripts/convert_model.py or pass --model-base"
            ) from None
        try:
            description = contract.read_description(version_dir)
            spec = contract.resize_spec(description)
            return cls(
                name=str(description["name"]),
                base_path=base_path.resolve(),
                version_dir=version_dir.resolve(),
                height=spec.height,
                width=spec.width,
                interpolation=spec.interpolation,
                jpeg_draft=spec.jpeg_draft,
                labels=contract.labels(description),
            )
        except (contract.ContractError, KeyError) as exc:
            raise BenchError(f"cannot read the description of {version_dir}: {exc}") from None


@dataclass(frozen=True)
class BenchSettings:
    """How much each benchmark measures; `quick()` is a smoke-test variant of the defaults."""

    model_base: Path = DEFAULT_MODEL_BASE
    dataset: Path = DEFAULT_DATASET
    output: Path | None = DEFAULT_OUTPUT
    only: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5")
    photos: int = 300
    duration: float = 15.0  # seconds of measured load per point
    warmup: float = 3.0  # seconds of load thrown away before each point
    concurrency: tuple[int, ...] = (1, 8, 32)
    # B3 runs each gateway this many times per point, in mirrored order (ours, seed, seed,
    # ours): one 15 s run per point let the order and a passing stall decide the ratio
    b3_repeats: int = 2
    gateway_workers: int = 2
    gateway_threads: int = 8
    worker_counts: tuple[int, ...] = (1, 2, 4)
    cold_starts: int = 3
    rss_requests: int = 1000
    batch_urls: int = 16
    batch_repeats: int = 10
    ceiling_seconds: float = 6.0
    profile_seconds: float = 10.0
    work_dir: Path | None = None  # logs and generated files; a temporary folder when None

    def quick(self) -> BenchSettings:
        """Tiny settings to check that every benchmark runs end to end (figures meaningless)."""
        from dataclasses import replace

        return replace(
            self,
            photos=24,
            duration=2.0,
            warmup=0.5,
            b3_repeats=1,
            cold_starts=1,
            rss_requests=40,
            batch_repeats=2,
            ceiling_seconds=1.0,
            profile_seconds=2.0,
        )
