"""The model contract of docs/model-contract.md: its names, description, versions and resize.

The one home of what the exporter (`clothing_tools.convert_model`), the gateway, the
development server, the evaluation, the benchmarks and the tests agree on. Standard library
only (no TensorFlow, no protobuf, no Pillow), so anything may import it cheaply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Signatures of an exported version (TF Serving's default key and the contract's own one).
SERVING_SIGNATURE = "serving_default"
DESCRIBE_SIGNATURE = "describe"
DESCRIPTION_OUTPUT = "description"  # the `describe` signature's JSON string output
INPUT_NAME = "images"  # uint8 [-1, H, W, 3]
SCORES_OUTPUT = "scores"  # float [-1, K] probabilities
LABELS_OUTPUT = "labels"  # string [-1, K]

# Files next to the SavedModel in <version>/assets.extra/
ASSETS_EXTRA = "assets.extra"
DESCRIPTION_FILE = "model_description.json"
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving's fixed name (saved_model_warmup.cc)

# Pillow resampling filters a model may name in `resize.interpolation`; the gateway maps them
# to Pillow's constants in `gateway.preprocessing.RESAMPLING`.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
DEFAULT_INTERPOLATION = "nearest"
RESIZE_LIBRARY = "pillow"


class ContractError(ValueError):
    """A model directory or description does not follow the contract."""


@dataclass(frozen=True)
class ResizeSpec:
    """How the model's training pipeline turned a photo into its input array."""

    height: int
    width: int
    interpolation: str = DEFAULT_INTERPOLATION
    jpeg_draft: bool = False


def version_dirs(base_path: Path) -> list[Path]:
    """The numeric version folders directly under a TF Serving model base path, oldest first.

    Raises OSError when the base path cannot be listed (a model server keeps what it serves).
    """
    versions = [p for p in base_path.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(versions, key=lambda p: int(p.name))


def latest_version_dir(base_path: Path) -> Path:
    """The highest numeric version folder under a model base path (TF Serving's default)."""
    try:
        versions = version_dirs(base_path)
    except OSError as exc:
        raise ContractError(f"cannot list {base_path}: {exc.strerror}") from None
    if not versions:
        raise ContractError(f"no numeric version folder under {base_path}")
    return versions[-1]


def description_path(version_dir: Path) -> Path:
    """Where a version keeps its model description."""
    return version_dir / ASSETS_EXTRA / DESCRIPTION_FILE


def warmup_path(version_dir: Path) -> Path:
    """Where a version keeps its TF Serving warm-up records."""
    return version_dir / ASSETS_EXTRA / WARMUP_FILE


def read_description(version_dir: Path) -> dict[str, Any]:
    """The model description a version folder carries, as a JSON object."""
    path = description_path(version_dir)
    try:
        description = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ContractError(f"no model description at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"cannot read {path}: {exc}") from None
    if not isinstance(description, dict):
        raise ContractError(f"{path} is not a JSON object")
    return description


def field(description: dict[str, Any], *keys: str) -> Any:
    """A nested value of a description, or None where a level is missing or not an object."""
    value: Any = description
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def labels(description: dict[str, Any]) -> tuple[str, ...]:
    """The model's labels in score order."""
    found = description.get("labels")
    if not isinstance(found, list) or not found or not all(isinstance(x, str) for x in found):
        raise ContractError("the description has no list of labels")
    return tuple(found)


def resize_spec(
    description: dict[str, Any], height: int | None = None, width: int | None = None
) -> ResizeSpec:
    """The resize a described model was trained with (input size from the signature if given)."""
    for key, actual in (("height", height), ("width", width)):
        described = field(description, "input", key)
        if actual is not None and described is not None and described != actual:
            raise ContractError(
                f"the description says input {key} {described} but the signature says {actual}"
            )
    size = [
        actual if actual is not None else field(description, "input", key)
        for key, actual in (("height", height), ("width", width))
    ]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
        raise ContractError(f"the description has no positive input height and width ({size})")
    interpolation = field(description, "resize", "interpolation") or DEFAULT_INTERPOLATION
    if interpolation not in INTERPOLATIONS:
        raise ContractError(
            f"unknown resize interpolation {interpolation!r} "
            f"(the gateway knows {', '.join(INTERPOLATIONS)})"
        )
    library = field(description, "resize", "library") or RESIZE_LIBRARY
    if library != RESIZE_LIBRARY:
        raise ContractError(f"resize library {library!r} is not {RESIZE_LIBRARY}")
    return ResizeSpec(
        size[0], size[1], interpolation, bool(field(description, "resize", "jpeg_draft"))
    )
