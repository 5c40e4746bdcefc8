"""Convert a Keras model (.keras or legacy .h5) into a TF Serving SavedModel version folder.

    python scripts/convert_model.py MODEL OUT_DIR [--name clothing-model] [--version N] [--force]
        [--preprocessing xception|inception|none|torch] [--outputs auto|logits|probabilities]
        [--labels a,b,... | --labels-file FILE] [--input-size HxW]
        [--interpolation nearest|bilinear|...] [--jpeg-draft] [--batching-parameters FILE]
    python scripts/convert_model.py --rewrite-warmup VERSION_DIR [--batching-parameters FILE]

writes OUT_DIR/<name>/<version>/ as described in docs/model-contract.md: the `serving_default`
signature (uint8 `images` -> float32 `scores` probabilities + string `labels`), the `describe`
signature (every output of both has one row per image, as TF Serving's batching needs),
`assets.extra/model_description.json` and `assets.extra/tf_serving_warmup_requests`.
The export is built in a hidden temporary folder next to the target, reloaded and checked
against the Keras model, and only then renamed into place; a failed run leaves nothing behind.

The warm-up records are exactly the requests the gateway sends (gateway/tfserving.py):
`serving_default` with `output_filter: [<scores output>]` once per batch size TF Serving's
batcher can form (`allowed_batch_sizes` of services/model/batching_parameters.txt), and
`describe` with `output_filter: ["description"]` on one image. TF Serving builds one executor
per distinct set of fetched outputs, so records fetching every output would leave the first
real requests of a new pod to pay for that (164 ms instead of 7 ms, issue 11).
`--rewrite-warmup` rewrites only that file of an existing version (atomically).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import numpy as np
from gateway.contract import (
    ASSETS_EXTRA,
    DEFAULT_INTERPOLATION,
    DESCRIBE_SIGNATURE,
    DESCRIPTION_FILE,
    DESCRIPTION_OUTPUT,
    INPUT_NAME,
    INTERPOLATIONS,
    LABELS_OUTPUT,
    SCORES_OUTPUT,
    SERVING_SIGNATURE,
    version_dirs,
    warmup_path,
)

PROG = "convert_model"
DEFAULT_MODEL_NAME = "clothing-model"
DEFAULT_LABELS = (
    "dress",
    "hat",
    "longsleeve",
    "outwear",
    "pants",
    "shirt",
    "shoes",
    "shorts",
    "skirt",
    "t-shirt",
)
PREPROCESSING = ("xception", "inception", "none", "torch")
OUTPUT_KINDS = ("auto", "logits", "probabilities")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF Serving's batching configuration: which batch sizes reach the model (warm-up covers each).
BATCHING_PARAMETERS = Path(__file__).resolve().parents[1] / "services/model/batching_parameters.txt"
# Every signature is run on these batch sizes to check each output has one row per image.
BATCH_CHECK_SIZES = (1, 3)
PARITY_TOLERANCE = 1e-4
PROBABILITY_SUM_TOLERANCE = 1e-3
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class ConversionError(Exception):
    """Bad input or a failed check; reported as one line on stderr with exit code 2."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, what it describes and how it was verified."""

    path: Path
    description: dict[str, Any]
    signature_text: str
    max_abs_diff: float


@dataclass(frozen=True)
class ModelFacts:
    """What the converter needs to know about a loaded Keras model."""

    height: int
    width: int
    num_outputs: int
    output_activation: str | None


def convert(
    model_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    version: int | None = None,
    labels: Sequence[str] = DEFAULT_LABELS,
    preprocessing: str = "xception",
    outputs: str = "auto",
    input_size: tuple[int, int] | None = None,
    interpolation: str = "nearest",
    jpeg_draft: bool = False,
    force: bool = False,
    batching_parameters: Path = BATCHING_PARAMETERS,
) -> ExportResult:
    """Export a Keras model to `<output_dir>/<model_name>/<version>/`; return what was written."""
    model_path = Path(model_path)
    labels = list(labels)
    _check_options(model_name, version, labels, preprocessing, outputs, input_size, interpolation)
    batch_sizes = warmup_batch_sizes(batching_parameters)
    kind = sniff_model_file(model_path)
    model_dir = Path(output_dir) / model_name
    if model_dir.exists() and not model_dir.is_dir():
        raise ConversionError(f"{model_dir} exists and is not a directory")
    if version is None:
        version = next_version(model_dir)
    elif (model_dir / str(version)).exists() and not force:
        raise ConversionError(
            f"version {version} already exists at {model_dir / str(version)} (use --force)"
        )

    with _quiet_third_party_warnings():
        model, keras_version = load_keras_model(model_path, kind)
        facts = inspect_model(model, input_size)
        if facts.num_outputs != len(labels):
            raise ConversionError(
                f"{len(labels)} labels given but the model outputs {facts.num_outputs} scores"
            )
        softmax_added = _needs_softmax(facts, outputs)
        description = build_description(
            model_name=model_name,
            version=version,
            labels=labels,
            height=facts.height,
            width=facts.width,
            preprocessing=preprocessing,
            interpolation=interpolation,
            jpeg_draft=jpeg_draft,
            softmax_added=softmax_added,
            source=model_path,
            source_format=kind,
            keras_version=keras_version,
        )
        created: list[Path] = []
        staging: Path | None = None
        try:
            _make_dirs(model_dir, created)
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the export from a server user
            write_saved_model(model, staging, description)
            write_warmup_requests(staging, description, batch_sizes)
            max_diff = verify_export(model, staging, description)
            signature_text = format_signatures(staging)
            final = model_dir / str(version)
            _commit(staging, final, replace=force)
        except BaseException as exc:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            for directory in reversed(created):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            if isinstance(exc, OSError):
                raise ConversionError(f"cannot write the export under {model_dir}: {exc}") from exc
            raise
    return ExportResult(final, description, signature_text, max_diff)


def _check_options(
    model_name: str,
    version: int | None,
    labels: list[str],
    preprocessing: str,
    outputs: str,
    input_size: tuple[int, int] | None,
    interpolation: str,
) -> None:
    """Reject bad options before anything is loaded or written."""
    if preprocessing not in PREPROCESSING:
        raise ConversionError(
            f"unknown preprocessing {preprocessing!r} (choose from {', '.join(PREPROCESSING)})"
        )
    if outputs not in OUTPUT_KINDS:
        raise ConversionError(
            f"unknown outputs {outputs!r} (choose from {', '.join(OUTPUT_KINDS)})"
        )
    if interpolation not in INTERPOLATIONS:
        raise ConversionError(
            f"unknown interpolation {interpolation!r} (choose from {', '.join(INTERPOLATIONS)})"
        )
    if not model_name or model_name.startswith(".") or "/" in model_name or "\\" in model_name:
        raise ConversionError(f"invalid model name {model_name!r}")
    if version is not None and version < 1:
        raise ConversionError(f"version must be a positive integer, got {version}")
    if input_size is not None and min(input_size) < 1:
        raise ConversionError(f"invalid input size {input_size[0]}x{input_size[1]}")
    if not labels:
        raise ConversionError("no labels given")
    if any(not label.strip() or label != label.strip() for label in labels):
        raise ConversionError("labels must be non-empty and have no surrounding whitespace")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConversionError(f"duplicate labels: {', '.join(duplicates)}")


def sniff_model_file(path: Path) -> str:
    """Tell a Keras 3 archive ("keras") from a legacy HDF5 file ("h5") by content, not name."""
    if not path.exists():
        raise ConversionError(f"no such model file: {path}")
    if not path.is_file():
        raise ConversionError(f"not a file: {path}")
    with path.open("rb") as stream:
        head = stream.read(len(HDF5_MAGIC))
    if head == HDF5_MAGIC:
        return "h5"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                if "config.json" in archive.namelist():
                    return "keras"
        except (zipfile.BadZipFile, OSError):
            pass
    raise ConversionError(f"{path} is not a Keras model (expected a .keras archive or an .h5 file)")


def next_version(model_dir: Path) -> int:
    """The next free TF Serving version number: one above the highest numeric folder."""
    versions = version_dirs(model_dir) if model_dir.is_dir() else []
    return int(versions[-1].name) + 1 if versions else 1


def load_keras_model(path: Path, kind: str) -> tuple[Any, str]:
    """Load a .keras file with Keras 3 or a legacy .h5 with tf_keras; return it and the version."""
    try:
        if kind == "h5":
            import tf_keras

            return tf_keras.models.load_model(path, compile=False), tf_keras.__version__
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ConversionError(
                f"Keras backend is {keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow"
            )
        return keras.models.load_model(path, compile=False), keras.__version__
    except ConversionError:
        raise
    except Exception as exc:  # Keras raises many types for unreadable or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"cannot load {path} as a Keras model: {reason}") from exc


def inspect_model(model: Any, input_size: tuple[int, int] | None) -> ModelFacts:
    """Check the model takes one [N, H, W, 3] image batch and emits one [N, K] score row."""
    try:
        inputs, model_outputs = list(model.inputs or []), list(model.outputs or [])
    except (AttributeError, ValueError):  # subclassed or never-built models have neither
        inputs, model_outputs = [], []
    if len(inputs) != 1 or len(model_outputs) != 1:
        raise ConversionError(
            f"the model must have one input and one output, it has {len(inputs)} and "
            f"{len(model_outputs)}"
        )
    in_shape = _dims(inputs[0].shape)
    if len(in_shape) != 4 or in_shape[3] != 3:
        raise ConversionError(
            f"the model input must be [N, H, W, 3] RGB images, it is {_shape_text(in_shape)}"
        )
    height, width = in_shape[1], in_shape[2]
    if input_size is not None:
        if (height, width) not in ((None, None), input_size):
            raise ConversionError(
                f"--input-size {input_size[0]}x{input_size[1]} does not match the model's "
                f"{height}x{width} input"
            )
        height, width = input_size
    if height is None or width is None:
        raise ConversionError(
            f"the model input size is dynamic ({_shape_text(in_shape)}); pass --input-size HxW"
        )
    out_shape = _dims(model_outputs[0].shape)
    if len(out_shape) != 2 or out_shape[1] is None:
        raise ConversionError(
            f"the model output must be [N, K] scores, it is {_shape_text(out_shape)}"
        )
    return ModelFacts(height, width, out_shape[1], _output_activation(model))


def _dims(shape: Any) -> list[int | None]:
    """A Keras 3 tuple or a tf.TensorShape as a list of ints and Nones."""
    as_list = getattr(shape, "as_list", None)
    return list(as_list() if as_list else shape)


def _shape_text(dims: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"


def _output_activation(model: Any) -> str | None:
    """The activation name of the layer producing the model's output, if it has one."""
    history = getattr(model.outputs[0], "_keras_history", None)
    layer = history[0] if history else model.layers[-1]
    while getattr(layer, "layers", None):  # a nested model: look at its own last layer
        layer = layer.layers[-1]
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def _needs_softmax(facts: ModelFacts, outputs: str) -> bool:
    """Whether to add a softmax: explicit --outputs, else from the output layer's activation."""
    if outputs != "auto":
        return outputs == "logits"
    if facts.output_activation == "softmax":
        return False
    if facts.output_activation == "linear":
        return True
    raise ConversionError(
        f"cannot tell whether the model emits logits or probabilities (output activation "
        f"{facts.output_activation!r}); pass --outputs logits or --outputs probabilities"
    )


def build_description(
    *,
    model_name: str,
    version: int,
    labels: Sequence[str],
    height: int,
    width: int,
    preprocessing: str,
    interpolation: str,
    jpeg_draft: bool,
    softmax_added: bool,
    source: Path,
    source_format: str,
    keras_version: str,
) -> dict[str, Any]:
    """The model description of docs/model-contract.md."""
    import tensorflow as tf

    return {
        "format": 1,
        "name": model_name,
        "version": version,
        "labels": list(labels),
        "input": {
            "name": INPUT_NAME,
            "height": height,
            "width": width,
            "channels": 3,
            "dtype": "uint8",
        },
        "outputs": {"scores": SCORES_OUTPUT, "labels": LABELS_OUTPUT},
        "preprocessing": preprocessing,
        "resize": {"library": "pillow", "interpolation": interpolation, "jpeg_draft": jpeg_draft},
        "softmax_added": softmax_added,
        "source": {"file": source.name, "sha256": sha256_file(source), "format": source_format},
        "exported_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tensorflow_version": tf.__version__,
        "keras_version": keras_version,
    }


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scale_images(images: np.ndarray, preprocessing: str) -> np.ndarray:
    """The model family's input scaling in NumPy (the reference for the in-graph version)."""
    x = images.astype(np.float32)
    if preprocessing in ("xception", "inception"):
        return x / np.float32(127.5) - np.float32(1.0)
    if preprocessing == "torch":
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
        std = np.asarray(IMAGENET_STD, dtype=np.float32)
        return (x / np.float32(255.0) - mean) / std
    return x


def _scale_in_graph(images: Any, preprocessing: str) -> Any:
    """The model family's input scaling as TensorFlow ops on a uint8 batch."""
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    if preprocessing in ("xception", "inception"):
        return x / 127.5 - 1.0
    if preprocessing == "torch":
        mean = tf.constant(IMAGENET_MEAN, dtype=tf.float32)
        std = tf.constant(IMAGENET_STD, dtype=tf.float32)
        return (x / 255.0 - mean) / std
    return x


def write_saved_model(model: Any, target: Path, description: dict[str, Any]) -> None:
    """Write the SavedModel with the `serving_default` and `describe` signatures into target."""
    import keras
    import tensorflow as tf

    preprocessing = description["preprocessing"]
    softmax_added = description["softmax_added"]
    labels_value = list(description["labels"])
    description_json = json.dumps(description)
    height, width = description["input"]["height"], description["input"]["width"]
    spec = [tf.TensorSpec([None, height, width, 3], tf.uint8, name=INPUT_NAME)]

    # Every output is batch-major (row i answers input row i): with --enable_batching TF
    # Serving splits every fetched output by rows and fails on any that has no batch dimension.
    def per_row_labels(images: Any) -> Any:
        rows = tf.shape(images)[0]
        return tf.tile(tf.constant(labels_value, dtype=tf.string)[None], [rows, 1])

    def serving_default(images: Any) -> dict[str, Any]:
        scores = tf.cast(model(_scale_in_graph(images, preprocessing), training=False), tf.float32)
        if softmax_added:
            scores = tf.nn.softmax(scores, axis=-1)
        return {SCORES_OUTPUT: scores, LABELS_OUTPUT: per_row_labels(images)}

    def describe(images: Any) -> dict[str, Any]:
        rows = tf.shape(images)[0]
        return {
            DESCRIPTION_OUTPUT: tf.fill([rows], tf.constant(description_json, dtype=tf.string)),
            LABELS_OUTPUT: per_row_labels(images),
        }

    # ExportArchive saves only the variables the endpoints use, not the Keras objects: Keras 3
    # random augmentation layers do not survive a plain tf.saved_model.save of the model, and
    # tf_keras models save far faster this way.
    archive = keras.export.ExportArchive()
    if isinstance(model, keras.Model):
        archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, serving_default, input_signature=spec)
    archive.add_endpoint(DESCRIBE_SIGNATURE, describe, input_signature=spec)
    archive.write_out(str(target), verbose=False)
    extra = target / ASSETS_EXTRA
    extra.mkdir()
    (extra / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2) + "\n")


def sample_images(batch: int, height: int, width: int, seed: int) -> np.ndarray:
    """Deterministic photo-like uint8 images: smooth colour gradients with noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    cols = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    images = []
    for _ in range(batch):
        low, high = rng.uniform(0, 255, (2, 1, 1, 3)).astype(np.float32)
        mix = rng.uniform(0, 1, 3).astype(np.float32)
        gradient = low + (high - low) * (mix * rows + (1 - mix) * cols)
        noise = rng.normal(0, 25, (height, width, 3)).astype(np.float32)
        images.append(np.clip(gradient + noise, 0, 255).astype(np.uint8))
    return np.stack(images)


def warmup_batch_sizes(batching_parameters: Path) -> tuple[int, ...]:
    """Every batch size TF Serving's batcher can form under a BatchingParameters text proto.

    `allowed_batch_sizes` if set (batches are padded up to one of them), else 1 ..
    `max_batch_size` (TF Serving's default 1000 is too many to warm up: set the field).
    Only these two fields matter here; the devserver reads the whole file the same way.
    """
    try:
        text = batching_parameters.read_text()
    except OSError as exc:
        raise ConversionError(f"cannot read {batching_parameters}: {exc.strerror}") from None
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    body = " ".join(lines)
    allowed = [int(v) for v in re.findall(r"\ballowed_batch_sizes\s*:\s*(\d+)", body)]
    if allowed:
        return tuple(allowed)
    found = re.search(r"\bmax_batch_size\s*\{\s*value\s*:\s*(\d+)\s*\}", body)
    largest = int(found.group(1)) if found else 1000
    if largest > 64:
        raise ConversionError(
            f"{batching_parameters}: batches of 1..{largest} images are possible; "
            "set allowed_batch_sizes so that warm-up can cover each"
        )
    return tuple(range(1, largest + 1))


def warmup_requests(description: dict[str, Any], batch_sizes: Sequence[int]) -> list[Any]:
    """The gateway's own requests: scores for each batch size, then describe on one image."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    height, width = description["input"]["height"], description["input"]["width"]
    requests = []
    scores = description["outputs"][SCORES_OUTPUT]
    shapes = [(SERVING_SIGNATURE, scores, n) for n in batch_sizes]
    shapes.append((DESCRIBE_SIGNATURE, DESCRIPTION_OUTPUT, 1))
    for signature, output, rows in shapes:
        request = predict_pb2.PredictRequest(output_filter=[output])
        request.model_spec.name = description["name"]
        request.model_spec.signature_name = signature
        images = sample_images(rows, height, width, seed=rows)
        request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images))
        requests.append(request)
    return requests


def write_warmup_requests(
    target: Path, description: dict[str, Any], batch_sizes: Sequence[int]
) -> None:
    """Write assets.extra/tf_serving_warmup_requests (PredictionLog records), atomically."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(target)
    partial = path.with_name(f".{path.name}.partial")
    with tf.io.TFRecordWriter(str(partial)) as writer:
        for request in warmup_requests(description, batch_sizes):
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    os.replace(partial, path)


def rewrite_warmup(version_dir: Path, batching_parameters: Path = BATCHING_PARAMETERS) -> int:
    """Rewrite the warm-up file of an exported version from its description; return records."""
    path = version_dir / ASSETS_EXTRA / DESCRIPTION_FILE
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from None
    sizes = warmup_batch_sizes(batching_parameters)
    write_warmup_requests(version_dir, description, sizes)
    return len(sizes) + 1


def verify_export(model: Any, export_dir: Path, description: dict[str, Any]) -> float:
    """Reload the export and check it against the contract and the Keras model; return max |dp|."""
    import tensorflow as tf

    _check_signature_defs(export_dir, description)
    loaded = tf.saved_model.load(str(export_dir))
    height, width = description["input"]["height"], description["input"]["width"]
    labels = [label.encode() for label in description["labels"]]
    for key in loaded.signatures:
        for rows in BATCH_CHECK_SIZES:
            run_signature(loaded, key, sample_images(rows, height, width, seed=rows))

    warmup = read_warmup_requests(export_dir)
    for record in warmup:  # every output is fetched here, a superset of the records' filter
        run_signature(loaded, record.signature, record.images)
    batches = [sample_images(6, height, width, 0)]
    batches.append(np.zeros_like(batches[0][:1]))
    batches.append(np.full_like(batches[0][:1], 255))
    batches += [record.images for record in warmup if record.signature == SERVING_SIGNATURE]
    max_diff = 0.0
    for batch in batches:
        result = run_signature(loaded, SERVING_SIGNATURE, batch)
        scores = result[SCORES_OUTPUT]
        if any(list(row) != labels for row in result[LABELS_OUTPUT]):
            raise ConversionError("verification failed: the exported labels differ")
        reference = model(scale_images(batch, description["preprocessing"]), training=False)
        expected = np.asarray(reference.numpy(), dtype=np.float64)
        if description["softmax_added"]:
            expected = _softmax(expected)
        sums = scores.sum(axis=1)
        if np.any(scores < 0) or np.any(np.abs(sums - 1) > PROBABILITY_SUM_TOLERANCE):
            raise ConversionError(
                "verification failed: exported scores are not probabilities (row sums "
                f"{sums.min():.4g}..{sums.max():.4g}); the model seems to emit logits, "
                "use --outputs logits"
            )
        max_diff = max(max_diff, float(np.max(np.abs(scores - expected))))
    if max_diff > PARITY_TOLERANCE:
        raise ConversionError(
            f"verification failed: exported and Keras probabilities differ by up to {max_diff:.3g}"
            f" (tolerance {PARITY_TOLERANCE:g})"
        )
    described = run_signature(loaded, DESCRIBE_SIGNATURE, np.zeros((2, height, width, 3), np.uint8))
    if any(json.loads(text.decode()) != description for text in described[DESCRIPTION_OUTPUT]):
        raise ConversionError("verification failed: the describe signature differs")
    if any(list(row) != labels for row in described[LABELS_OUTPUT]):
        raise ConversionError("verification failed: the describe labels differ")
    return max_diff


def run_signature(loaded: Any, key: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """Call a signature of a loaded SavedModel; check every output has one row per image."""
    import tensorflow as tf

    if key not in loaded.signatures:
        raise ConversionError(f"verification failed: no {key!r} signature to run")
    result = {
        name: value.numpy()
        for name, value in loaded.signatures[key](**{INPUT_NAME: tf.constant(images)}).items()
    }
    for name, value in sorted(result.items()):
        if value.ndim == 0 or value.shape[0] != len(images):
            raise ConversionError(
                f"verification failed: output {name!r} of {key!r} has shape {list(value.shape)} "
                f"for {len(images)} images; TF Serving's batching needs every output to have "
                "one row per image"
            )
    return result


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


class WarmupRecord(NamedTuple):
    """One warm-up record: the signature, the outputs it fetches (all when empty), the images."""

    signature: str
    output_filter: tuple[str, ...]
    images: np.ndarray


def read_warmup_requests(export_dir: Path) -> list[WarmupRecord]:
    """Each warm-up record of a version folder, parsed the way TF Serving reads it."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    path = warmup_path(export_dir)
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        key = request.model_spec.signature_name or SERVING_SIGNATURE
        requests.append(
            WarmupRecord(
                key, tuple(request.output_filter), tf.make_ndarray(request.inputs[INPUT_NAME])
            )
        )
    return requests


def read_signature_defs(export_dir: Path) -> dict[str, Any]:
    """The SignatureDefs of the `serve` MetaGraph in a SavedModel folder."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString(
        (export_dir / "saved_model.pb").read_bytes()
    )
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ConversionError("verification failed: the SavedModel has no 'serve' MetaGraph")


def _check_signature_defs(export_dir: Path, description: dict[str, Any]) -> None:
    """Check the exported SignatureDefs against docs/model-contract.md."""
    height, width = description["input"]["height"], description["input"]["width"]
    classes = len(description["labels"])
    images = ("DT_UINT8", [-1, height, width, 3])
    labels = ("DT_STRING", [-1, classes])
    expected = {
        SERVING_SIGNATURE: (
            {INPUT_NAME: images},
            {SCORES_OUTPUT: ("DT_FLOAT", [-1, classes]), LABELS_OUTPUT: labels},
        ),
        DESCRIBE_SIGNATURE: (
            {INPUT_NAME: images},
            {DESCRIPTION_OUTPUT: ("DT_STRING", [-1]), LABELS_OUTPUT: labels},
        ),
    }
    signatures = read_signature_defs(export_dir)
    for key, (want_inputs, want_outputs) in expected.items():
        if key not in signatures:
            raise ConversionError(f"verification failed: no {key!r} signature")
        got_inputs = {k: _tensor_info(v) for k, v in signatures[key].inputs.items()}
        got_outputs = {k: _tensor_info(v) for k, v in signatures[key].outputs.items()}
        if got_inputs != want_inputs or got_outputs != want_outputs:
            raise ConversionError(
                f"verification failed: signature {key!r} is {got_inputs} -> {got_outputs}"
            )


def _tensor_info(info: Any) -> tuple[str, list[int]]:
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(info.dtype), [d.size for d in info.tensor_shape.dim]


def format_signatures(export_dir: Path) -> str:
    """The exported signatures as `saved_model_cli show --all` prints them."""
    from tensorflow.core.framework import types_pb2

    lines: list[str] = []
    signatures = read_signature_defs(export_dir)
    for key in (SERVING_SIGNATURE, DESCRIBE_SIGNATURE):
        signature = signatures[key]
        lines.append(f"signature_def['{key}']:")
        for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
            lines.append(f"  The given SavedModel SignatureDef contains the following {kind}(s):")
            for name, info in sorted(tensors.items()):
                if info.tensor_shape.unknown_rank:
                    shape = "unknown_rank"
                else:
                    shape = "(" + ", ".join(str(d.size) for d in info.tensor_shape.dim) + ")"
                lines.append(f"    {kind}s['{name}'] tensor_info:")
                lines.append(f"        dtype: {types_pb2.DataType.Name(info.dtype)}")
                lines.append(f"        shape: {shape}")
                lines.append(f"        name: {info.name}")
        lines.append(f"  Method name is: {signature.method_name}")
    return "\n".join(lines)


def _make_dirs(directory: Path, created: list[Path]) -> None:
    """Create directory and its missing parents, recording each one created, outermost first."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    for path in reversed(missing):
        path.mkdir()
        created.append(path)


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2(source: Path, target: Path, flags: int) -> bool:
    """Linux renameat2(2); False when the platform or filesystem does not support it."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(target))


def _commit(staging: Path, final: Path, *, replace: bool) -> None:
    """Move the verified export into place in one rename, never touching other versions."""
    # TF Serving polls the base path: a replace done as two renames would briefly remove the
    # version and make the server unload it, so swap the two folders atomically where we can.
    if replace and final.exists():
        if _renameat2(staging, final, _RENAME_EXCHANGE):
            shutil.rmtree(staging, ignore_errors=True)  # now holds the replaced version
            return
        retired = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
        final.rename(retired / final.name)
        try:
            staging.rename(final)
        except OSError:
            (retired / final.name).rename(final)
            retired.rmdir()
            raise
        shutil.rmtree(retired, ignore_errors=True)
        return
    try:
        renamed = _renameat2(staging, final, _RENAME_NOREPLACE)
    except FileExistsError:
        renamed = False
    if not renamed:
        if final.exists():
            raise ConversionError(f"version {final.name} appeared at {final} meanwhile")
        staging.rename(final)


@contextlib.contextmanager
def _quiet_third_party_warnings() -> Iterator[None]:
    """Silence a known NumPy 2 deprecation raised inside Keras/TensorFlow, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"__array__ implementation doesn't accept a copy keyword"
        )
        yield


def read_labels_file(path: Path) -> list[str]:
    """Labels from a text file (one per line) or a JSON list / object with a "labels" list."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read labels file {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConversionError(f"labels file {path} is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("labels")
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise ConversionError(f"labels file {path} has no list of label strings")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_input_size(text: str) -> tuple[int, int]:
    """Parse "HxW" or a single "N" (square) into (height, width)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ConversionError(f"invalid --input-size {text!r} (expected HxW, e.g. 299x299)")
    height, width = (int(parts[0]), int(parts[-1]))
    return height, width


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ConversionError line instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConversionError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = _ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", type=Path, nargs="?", help="Keras model file (.keras or legacy .h5)"
    )
    parser.add_argument(
        "output_dir", type=Path, nargs="?", help="TF Serving model base directory parent"
    )
    parser.add_argument(
        "--batching-parameters",
        type=Path,
        default=BATCHING_PARAMETERS,
        help="TF Serving BatchingParameters file whose batch sizes warm-up covers",
    )
    parser.add_argument(
        "--rewrite-warmup",
        type=Path,
        metavar="VERSION_DIR",
        help="only rewrite the warm-up records of this exported version folder",
    )
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model name (sub-folder)")
    parser.add_argument("--version", type=int, help="version number (default: next free)")
    parser.add_argument("--force", action="store_true", help="replace an existing version")
    parser.add_argument(
        "--preprocessing", default="xception", help=f"input scaling: {', '.join(PREPROCESSING)}"
    )
    parser.add_argument(
        "--outputs",
        default="auto",
        help="whether the model emits logits or probabilities "
        "(auto: from the output layer's activation)",
    )
    label_group = parser.add_mutually_exclusive_group()
    label_group.add_argument("--labels", help="comma-separated class labels, in output order")
    label_group.add_argument(
        "--labels-file", type=Path, help="labels, one per line, or JSON (list or {'labels': [...]})"
    )
    parser.add_argument("--input-size", help="HxW, required when the model's size is dynamic")
    parser.add_argument(
        "--interpolation",
        default=DEFAULT_INTERPOLATION,
        help=f"resize filter: {', '.join(INTERPOLATIONS)}",
    )
    parser.add_argument(
        "--jpeg-draft", action="store_true", help="the model saw draft-decoded JPEGs"
    )
    try:
        args = parser.parse_args(argv)
        if args.rewrite_warmup is not None:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            records = rewrite_warmup(args.rewrite_warmup, args.batching_parameters)
            print(f"wrote {records} warm-up records to {args.rewrite_warmup / 'assets.extra'}")
            return 0
        if args.model is None or args.output_dir is None:
            raise ConversionError("MODEL and OUT_DIR are required (or use --rewrite-warmup)")
        labels: Sequence[str] = DEFAULT_LABELS
        if args.labels is not None:
            labels = [label.strip() for label in args.labels.split(",")]
        elif args.labels_file is not None:
            labels = read_labels_file(args.labels_file)
        input_size = parse_input_size(args.input_size) if args.input_size else None
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = convert(
            args.model,
            args.output_dir,
            model_name=args.name,
            version=args.version,
            labels=labels,
            preprocessing=args.preprocessing,
            outputs=args.outputs,
            input_size=input_size,
            interpolation=args.interpolation,
            jpeg_draft=args.jpeg_draft,
            force=args.force,
            batching_parameters=args.batching_parameters,
        )
    except ConversionError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(result.signature_text)
    print(
        f"verified: max |probability difference| {result.max_abs_diff:.3g} "
        f"(tolerance {PARITY_TOLERANCE:g})"
    )
    print(f"exported {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
