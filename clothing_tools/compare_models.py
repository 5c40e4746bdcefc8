"""Promotion gate: replay labelled photos through the `stable` and `canary` model versions.

    python scripts/compare_models.py [--tf-serving 127.0.0.1:8500] [--model-name clothing-model]
        [--data-dir ../shared/clothing-dataset-small] [--split validation] [--per-class 0]
        [--min-agreement 0.90] [--max-accuracy-drop 0.02] [--json]

Each photo is prepared and sent exactly as the gateway does it (its own TF Serving client:
each version's description resizes the photo, the Predict is pinned to that version), once
to the version labelled `stable` and once to `canary`. It prints the top-1 accuracy of each
version against the photo's class folder, their top-1 agreement and mean score divergence
(total variation, as the gateway's shadow metrics), and PASS or FAIL:

- PASS needs agreement >= --min-agreement and canary accuracy >= stable accuracy minus
  --max-accuracy-drop (both fractions).

Exit codes: 0 pass, 1 fail, 2 bad input or no labelled versions (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from gateway.errors import GatewayError
from gateway.images import load_model_input
from gateway.predictor import ModelInfo
from gateway.routing import CANARY, STABLE
from gateway.service import total_variation
from gateway.settings import Settings, SettingsError

from clothing_tools.train_demo_model import DEFAULT_DATA, UsageError, list_split

if TYPE_CHECKING:
    from gateway.tfserving import TFServingPredictor

PROG = "compare_models"
BATCH = 16
# The thresholds a canary must meet by default (override with the flags). On the 341 photos
# of the validation split one photo is 0.3 %: a 2-point accuracy drop is about 7 photos,
# and 90 % agreement leaves room for retrained models that legitimately change their mind
# on hard photos, while a mislabelled or broken export agrees on far fewer.
MIN_AGREEMENT = 0.90
MAX_ACCURACY_DROP = 0.02


@dataclass(frozen=True)
class Comparison:
    """What the gate measured and decided."""

    photos: int
    stable_version: int
    canary_version: int
    stable_accuracy: float
    canary_accuracy: float
    agreement: float
    mean_divergence: float
    min_agreement: float
    max_accuracy_drop: float
    passed: bool


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: {message}\n")


def choose_photos(split_dir: Path, per_class: int) -> tuple[list[Path], list[str]]:
    """The split's photos (the first `per_class` of each class when > 0) and their classes."""
    paths, indices, classes = list_split(split_dir)
    chosen: list[Path] = []
    truth: list[str] = []
    taken: dict[int, int] = {}
    for path, index in zip(paths, indices, strict=True):
        if per_class and taken.get(index, 0) >= per_class:
            continue
        taken[index] = taken.get(index, 0) + 1
        chosen.append(path)
        truth.append(classes[index])
    if not chosen:
        raise UsageError(f"no photos under {split_dir}")
    return chosen, truth


def score(
    predictor: TFServingPredictor, info: ModelInfo, photos: Sequence[Path], settings: Settings
) -> list[dict[str, float]]:
    """The version's scores of every photo, by label, prepared as the gateway prepares them."""
    rows: list[dict[str, float]] = []
    for start in range(0, len(photos), BATCH):
        batch = np.stack(
            [
                load_model_input(
                    photo.read_bytes(),
                    info.resize,
                    max_bytes=settings.max_image_bytes,
                    max_pixels=settings.max_image_pixels,
                )
                for photo in photos[start : start + BATCH]
            ]
        )
        prediction = predictor.predict(batch, f"compare-{uuid.uuid4().hex[:12]}", info=info)
        rows += [dict(zip(info.labels, row.tolist(), strict=True)) for row in prediction.scores]
    return rows


def top(row: dict[str, float]) -> str:
    """The label with the highest score."""
    return max(row, key=row.__getitem__)


def compare(
    stable: list[dict[str, float]],
    canary: list[dict[str, float]],
    truth: Sequence[str],
    versions: tuple[int, int],
    min_agreement: float,
    max_accuracy_drop: float,
) -> Comparison:
    """Accuracy of each version, their agreement and divergence, and the gate's verdict."""
    count = len(truth)
    stable_accuracy = sum(top(r) == t for r, t in zip(stable, truth, strict=True)) / count
    canary_accuracy = sum(top(r) == t for r, t in zip(canary, truth, strict=True)) / count
    agreement = sum(top(s) == top(c) for s, c in zip(stable, canary, strict=True)) / count
    divergence = sum(
        total_variation(list(s), np.array(list(s.values())), list(c), np.array(list(c.values())))
        for s, c in zip(stable, canary, strict=True)
    )
    passed = agreement >= min_agreement and canary_accuracy >= stable_accuracy - max_accuracy_drop
    return Comparison(
        photos=count,
        stable_version=versions[0],
        canary_version=versions[1],
        stable_accuracy=stable_accuracy,
        canary_accuracy=canary_accuracy,
        agreement=agreement,
        mean_divergence=divergence / count,
        min_agreement=min_agreement,
        max_accuracy_drop=max_accuracy_drop,
        passed=passed,
    )


def report(result: Comparison) -> str:
    """The human-readable summary."""
    verdict = "PASS" if result.passed else "FAIL"
    return "\n".join(
        [
            f"photos            {result.photos}",
            f"stable  version {result.stable_version:<4} accuracy {result.stable_accuracy:.1%}",
            f"canary  version {result.canary_version:<4} accuracy {result.canary_accuracy:.1%}",
            f"top-1 agreement   {result.agreement:.1%} (needs >= {result.min_agreement:.0%})",
            f"mean divergence   {result.mean_divergence:.4f} (total variation, 0..1)",
            f"accuracy change   {result.canary_accuracy - result.stable_accuracy:+.1%} "
            f"(needs >= -{result.max_accuracy_drop:.1%})",
            f"{verdict}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gate; 0 pass, 1 fail, 2 bad input."""
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--tf-serving", default="127.0.0.1:8500", help="TF Serving gRPC target")
    parser.add_argument("--model-name", default="clothing-model")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--per-class", type=int, default=0, help="photos per class (0: all)")
    parser.add_argument("--min-agreement", type=_fraction, default=MIN_AGREEMENT)
    parser.add_argument("--max-accuracy-drop", type=_fraction, default=MAX_ACCURACY_DROP)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    predictor: TFServingPredictor | None = None
    try:
        if args.per_class < 0:
            raise UsageError(f"--per-class must be >= 0, got {args.per_class}")
        photos, truth = choose_photos(args.data_dir / args.split, args.per_class)
        settings = Settings(
            tf_serving_host=args.tf_serving, model_name=args.model_name, model_timeout=60.0
        )
        settings.validate()
        # TF Serving's messages come from TensorFlow in this environment: import it only
        # once the input is known to be good, and quietly
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from gateway.tfserving import TFServingPredictor

        predictor = TFServingPredictor(settings)
        stable = predictor.model_info("compare-describe", route=STABLE)
        canary = predictor.model_info("compare-describe", route=CANARY)
        if stable.route != STABLE or canary.route != CANARY:
            raise UsageError(
                f"model {args.model_name!r} at {args.tf_serving} has no versions labelled "
                "stable and canary (start TF Serving with a model config that has both)"
            )
        result = compare(
            score(predictor, stable, photos, settings),
            score(predictor, canary, photos, settings),
            truth,
            (stable.version, canary.version),
            args.min_agreement,
            args.max_accuracy_drop,
        )
    except (UsageError, SettingsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"{PROG}: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        if predictor is not None:
            predictor.close()
    print(json.dumps(asdict(result), indent=2) if args.json else report(result))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
