"""A model update on the multi-replica stack: promoting a canary whose labels are in another order.

Before, every model replica serves what the Pulumi program's model image carries during a
canary (README "Updating the model"): the demo version N and version N+1, TF Serving labels
`stable` -> N and `canary` -> N+1. The promotion replaces every replica, as a rolling update
does, with the promoted image: N+1 only, both labels -> N+1. Version N+1 is the demo model
re-exported with its classes in reverse order (benchmarks.model_versions): the same
classifier, so a photo's true top class does not change, but scores labelled with the other
version's description name a wrong class. Every answer's top class is checked against what
its own version computes in process for the photo it was sent.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import model_versions
from benchmarks.config import DEFAULT_DATASET, DEFAULT_MODEL_BASE
from benchmarks.photos import Photo
from benchmarks.scaling.loadgen import Record
from clothing_tools.local_stack import model_config_text, newest_version, stable_and_canary


@dataclass(frozen=True)
class Promotion:
    """The model config files before and after, and each version's top class per photo."""

    canary_stage: Path  # --model_config_file of the image with stable N, canary N+1
    promoted: Path  # --model_config_file of the image with N+1 only
    stable: int
    canary: int
    expected: dict[str, list[str]]  # version -> top class of each photo (body index)


def prepare(work: Path, photos: Sequence[Photo], model_name: str) -> Promotion:
    """Export the reordered version, write both model configs, compute the expected classes."""
    stable = newest_version(DEFAULT_MODEL_BASE)
    canary = stable + 1
    root = work / "versions"
    shutil.rmtree(root, ignore_errors=True)
    canary_base = root / "reordered" / model_name
    canary_dir = model_versions.reexport(DEFAULT_MODEL_BASE / str(stable), canary_base, canary)
    canary_stage = stable_and_canary(DEFAULT_MODEL_BASE, canary_base, root / "canary", model_name)
    promoted = root / "promoted.config"
    promoted.write_text(
        model_config_text(model_name, canary_base, {"stable": canary, "canary": canary}),
        encoding="utf-8",
    )
    paths = [DEFAULT_DATASET / photo.relative for photo in photos]
    expected = {
        str(stable): model_versions.top_classes(DEFAULT_MODEL_BASE / str(stable), paths),
        str(canary): model_versions.top_classes(canary_dir, paths),
    }
    return Promotion(canary_stage, promoted, stable, canary, expected)


def check_answers(records: Iterable[Record], expected: dict[str, list[str]]) -> dict[str, Any]:
    """Answers per version, and those whose top class is not their version's for the photo."""
    versions: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    mislabelled = 0
    unknown_version = 0
    for record in records:
        outcomes[record.outcome] += 1
        if record.outcome != "200":
            continue
        versions[record.version] += 1
        if record.version not in expected:
            unknown_version += 1
        elif expected[record.version][record.body] != record.top:
            mislabelled += 1
    return {
        "answers_by_version": dict(sorted(versions.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "mislabelled": mislabelled,
        "unknown_version": unknown_version,
    }
