"""scripts/convert_model.py against real Keras 3 and tf_keras models and real SavedModels."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from devserver.config_files import read_batching_parameters
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import prediction_log_pb2

from clothing_tools.convert_model import (
    DEFAULT_LABELS,
    ConversionError,
    ExportResult,
    convert,
    format_signatures,
    main,
    read_signature_defs,
    warmup_batch_sizes,
)
from clothing_tools.local_stack import free_port
from tests.helpers import REPO_ROOT
from tests.model_factories import (
    LABELS,
    keras_classifier,
    quiet_keras,
    sample_batch,
    save_keras_classifier,
)
from tests.scripts.support import KERAS_SIZE, XCEPTION_SIZE

SCRIPT = REPO_ROOT / "scripts" / "convert_model.py"
BATCHING_FILE = REPO_ROOT / "services/model/batching_parameters.txt"


# --- helpers ---------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under root (hidden ones too): folders by name, files by size and mtime.

    A folder's own mtime is left out: creating and removing a temporary folder inside it
    changes that without changing what it holds.
    """
    if not root.exists():
        return {}
    entries = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        if path.is_dir():
            entries[str(path.relative_to(root))] = ("dir", 0, 0)
        else:
            entries[str(path.relative_to(root))] = ("file", stat.st_size, stat.st_mtime_ns)
    return entries


def run_main(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run convert_model.main in-process and return (exit code, stdout, stderr)."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_usage_error(code: int, err: str, fragment: str) -> None:
    """Exit code 2 and exactly one stderr line `convert_model: error: ...fragment...`."""
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("convert_model: error: "), err
    assert fragment in lines[0], err


@functools.cache
def load_export(path: Path) -> Any:
    """Load an exported SavedModel once per path (every export here lands in a fresh folder)."""
    with quiet_keras():
        return tf.saved_model.load(str(path))


def serve(loaded: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    result = loaded.signatures["serving_default"](images=tf.constant(images))
    return {key: value.numpy() for key, value in result.items()}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities


def keras_probabilities(model: Any, scaled: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities on already-scaled inputs (softmax applied to logits)."""
    return softmax(model(scaled, training=False).numpy().astype(np.float64))


def xception_scale(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def tensor_contract(signature: Any) -> dict[str, dict[str, tuple[str, list[int]]]]:
    """A SignatureDef's inputs and outputs as {key: (dtype name, dims)}."""

    def info(tensors: Any) -> dict[str, tuple[str, list[int]]]:
        return {
            key: (types_pb2.DataType.Name(t.dtype), [d.size for d in t.tensor_shape.dim])
            for key, t in tensors.items()
        }

    return {"inputs": info(signature.inputs), "outputs": info(signature.outputs)}


@pytest.fixture(scope="session")
def keras_model(keras_model_file: Path) -> Any:
    """The .keras source model, loaded independently of the converter."""
    import keras

    with quiet_keras():
        return keras.models.load_model(keras_model_file, compile=False)


@pytest.fixture(scope="session")
def h5_model(h5_model_file: Path) -> Any:
    """The legacy .h5 source model, loaded independently with tf_keras."""
    import tf_keras

    return tf_keras.models.load_model(h5_model_file, compile=False)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An output folder that already holds an unrelated model and version 1 of ours."""
    out = tmp_path / "out"
    (out / "clothing-model" / "1").mkdir(parents=True)
    (out / "clothing-model" / "1" / "saved_model.pb").write_bytes(b"existing version")
    (out / "other-model" / "3").mkdir(parents=True)
    return out


# --- layout and contract ---------------------------------------------------------------------


@pytest.mark.parametrize("export_name", ["keras_export", "h5_export"])
def test_export_has_the_tf_serving_layout(export_name: str, request: pytest.FixtureRequest) -> None:
    export: ExportResult = request.getfixturevalue(export_name)
    base = export.path.parent
    assert export.path.name == "1"
    assert base.name == "clothing-model"
    assert sorted(p.name for p in base.iterdir()) == ["1"]  # no temporary folders left
    assert (export.path / "saved_model.pb").is_file()
    assert (export.path / "variables" / "variables.index").is_file()
    assert (export.path / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert (export.path / "assets.extra" / "model_description.json").is_file()
    # TF Serving's image runs as an unprivileged user: everything must be world-readable
    for path in (export.path, *export.path.rglob("*")):
        wanted = 0o005 if path.is_dir() else 0o004
        assert path.stat().st_mode & wanted == wanted, path


@pytest.mark.parametrize(
    ("export_name", "size"),
    [("keras_export", KERAS_SIZE), ("h5_export", (XCEPTION_SIZE, XCEPTION_SIZE))],
)
def test_signatures_follow_the_contract(
    export_name: str, size: tuple[int, int], request: pytest.FixtureRequest
) -> None:
    export: ExportResult = request.getfixturevalue(export_name)
    signatures = read_signature_defs(export.path)
    images = ("DT_UINT8", [-1, *size, 3])
    labels = ("DT_STRING", [-1, len(LABELS)])
    assert tensor_contract(signatures["serving_default"]) == {
        "inputs": {"images": images},
        "outputs": {"scores": ("DT_FLOAT", [-1, len(LABELS)]), "labels": labels},
    }
    assert tensor_contract(signatures["describe"]) == {
        "inputs": {"images": images},
        "outputs": {"description": ("DT_STRING", [-1]), "labels": labels},
    }
    loaded = load_export(export.path)
    result = serve(loaded, sample_batch(size, batch=3, seed=7))
    assert result["scores"].dtype == np.float32
    assert result["scores"].shape == (3, len(LABELS))
    assert result["labels"].shape == (3, len(LABELS))
    for row in result["labels"]:
        assert [label.decode() for label in row] == list(DEFAULT_LABELS)
    np.testing.assert_allclose(result["scores"].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("export_name", ["keras_export", "h5_export"])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_output_has_one_row_per_image(
    export_name: str, batch: int, request: pytest.FixtureRequest
) -> None:
    # TF Serving with --enable_batching splits every fetched output by rows and fails with
    # FAILED_PRECONDITION on any output whose first dimension is not the batch
    export: ExportResult = request.getfixturevalue(export_name)
    height, width = export.description["input"]["height"], export.description["input"]["width"]
    loaded = load_export(export.path)
    assert set(loaded.signatures) == {"serving_default", "describe"}
    signature_defs = read_signature_defs(export.path)
    for key in loaded.signatures:
        for info in signature_defs[key].outputs.values():
            assert [d.size for d in info.tensor_shape.dim][:1] == [-1], key
    for key, signature in loaded.signatures.items():
        outputs = signature(images=tf.constant(sample_batch((height, width), batch=batch)))
        assert {name: value.shape[0] for name, value in outputs.items()} == dict.fromkeys(
            outputs, batch
        ), key


@pytest.mark.parametrize("export_name", ["keras_export", "h5_export"])
def test_describe_returns_the_stored_description(
    export_name: str, request: pytest.FixtureRequest
) -> None:
    export: ExportResult = request.getfixturevalue(export_name)
    stored = json.loads((export.path / "assets.extra" / "model_description.json").read_text())
    loaded = load_export(export.path)
    height, width = stored["input"]["height"], stored["input"]["width"]
    described = loaded.signatures["describe"](images=tf.zeros([1, height, width, 3], tf.uint8))
    assert json.loads(described["description"].numpy()[0].decode()) == stored == export.description
    assert [label.decode() for label in described["labels"].numpy()[0]] == stored["labels"]


def test_keras_description_records_the_source_and_settings(
    keras_export: ExportResult, keras_model_file: Path
) -> None:
    import hashlib

    import keras

    description = keras_export.description
    assert description["format"] == 1
    assert description["name"] == "clothing-model"
    assert description["version"] == 1
    assert description["labels"] == list(DEFAULT_LABELS)
    assert description["input"] == {
        "name": "images",
        "height": KERAS_SIZE[0],
        "width": KERAS_SIZE[1],
        "channels": 3,
        "dtype": "uint8",
    }
    assert description["outputs"] == {"scores": "scores", "labels": "labels"}
    assert description["preprocessing"] == "xception"
    assert description["resize"] == {
        "library": "pillow",
        "interpolation": "nearest",
        "jpeg_draft": False,
    }
    assert description["softmax_added"] is True  # the tiny model emits logits
    assert description["source"] == {
        "file": keras_model_file.name,
        "sha256": hashlib.sha256(keras_model_file.read_bytes()).hexdigest(),
        "format": "keras",
    }
    assert description["exported_at"].endswith("Z")
    assert description["tensorflow_version"] == tf.__version__
    assert description["keras_version"] == keras.__version__


def test_h5_description_records_tf_keras(h5_export: ExportResult, h5_model_file: Path) -> None:
    import tf_keras

    description = h5_export.description
    assert description["source"]["file"] == h5_model_file.name
    assert description["source"]["format"] == "h5"
    assert description["keras_version"] == tf_keras.__version__
    assert description["input"]["height"] == description["input"]["width"] == XCEPTION_SIZE
    assert description["softmax_added"] is True  # dense_7 emits logits, like the seed's model
    assert description["resize"] == {
        "library": "pillow",
        "interpolation": "bilinear",
        "jpeg_draft": True,
    }


# --- parity ----------------------------------------------------------------------------------


def test_keras_export_matches_the_keras_model(keras_export: ExportResult, keras_model: Any) -> None:
    loaded = load_export(keras_export.path)
    for batch in (1, 5):
        images = sample_batch(KERAS_SIZE, batch=batch, seed=100 + batch)
        scores = serve(loaded, images)["scores"]
        expected = keras_probabilities(keras_model, xception_scale(images))
        assert np.max(np.abs(scores - expected)) <= 1e-4
    # the probabilities are far from uniform, so the comparison can tell models apart
    assert scores.max() > 0.3
    assert keras_export.max_abs_diff <= 1e-4


def test_h5_export_matches_the_tf_keras_model(h5_export: ExportResult, h5_model: Any) -> None:
    loaded = load_export(h5_export.path)
    images = sample_batch((XCEPTION_SIZE, XCEPTION_SIZE), batch=3, seed=11)
    scores = serve(loaded, images)["scores"]
    expected = keras_probabilities(h5_model, xception_scale(images))
    assert np.max(np.abs(scores - expected)) <= 1e-4
    assert scores.max() > 0.3


def test_keras_export_matches_on_real_photos(
    keras_export: ExportResult, keras_model: Any, dataset_dir: Path
) -> None:
    from gateway.contract import ResizeSpec
    from gateway.preprocessing import to_model_input

    spec = ResizeSpec(*KERAS_SIZE, interpolation="nearest")
    photos = sorted((dataset_dir / "validation").glob("*/*.jpg"))[::40][:6]
    images = np.stack([to_model_input(p.read_bytes(), spec) for p in photos])
    scores = serve(load_export(keras_export.path), images)["scores"]
    expected = keras_probabilities(keras_model, xception_scale(images))
    assert np.max(np.abs(scores - expected)) <= 1e-4


@pytest.mark.parametrize(
    ("preprocessing", "scale"),
    [
        ("inception", xception_scale),
        ("none", lambda images: images.astype(np.float32)),
        (
            "torch",
            lambda images: (
                (images.astype(np.float32) / 255.0 - np.array([0.485, 0.456, 0.406], np.float32))
                / np.array([0.229, 0.224, 0.225], np.float32)
            ).astype(np.float32),
        ),
    ],
)
def test_preprocessing_is_applied_in_the_graph(
    preprocessing: str, scale: Any, keras_model_file: Path, keras_model: Any, tmp_path: Path
) -> None:
    export = convert(keras_model_file, tmp_path, preprocessing=preprocessing)
    assert export.description["preprocessing"] == preprocessing
    images = sample_batch(KERAS_SIZE, batch=4, seed=3)
    scores = serve(load_export(export.path), images)["scores"]
    expected = keras_probabilities(keras_model, scale(images))
    assert np.max(np.abs(scores - expected)) <= 1e-4
    # a different scaling gives visibly different probabilities, so the check above has teeth
    if preprocessing == "none":
        other = keras_probabilities(keras_model, xception_scale(images))
        assert np.max(np.abs(scores - other)) > 1e-2


def test_probability_model_gets_no_second_softmax(models_dir: Path, tmp_path: Path) -> None:
    import keras

    source = save_keras_classifier(
        models_dir / "probabilities.keras", activation="softmax", augmentation=False
    )
    export = convert(source, tmp_path)
    assert export.description["softmax_added"] is False
    with quiet_keras():
        model = keras.models.load_model(source, compile=False)
    images = sample_batch(KERAS_SIZE, batch=4, seed=5)
    scores = serve(load_export(export.path), images)["scores"]
    expected = model(xception_scale(images), training=False).numpy()
    assert np.max(np.abs(scores - expected)) <= 1e-4


def test_outputs_flag_overrides_detection(keras_model_file: Path, tmp_path: Path) -> None:
    # forcing "probabilities" on a logits model must not produce a contract-breaking export
    before = snapshot(tmp_path)
    with pytest.raises(ConversionError, match="not probabilities"):
        convert(keras_model_file, tmp_path, outputs="probabilities")
    assert snapshot(tmp_path) == before


def test_dynamic_size_model_needs_and_uses_input_size(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save_keras_classifier(models_dir / "dynamic.keras", size=(None, None))
    code, _, err = run_main(capsys, source, tmp_path)
    assert_usage_error(code, err, "--input-size")
    assert snapshot(tmp_path) == {}

    code, out, err = run_main(capsys, source, tmp_path, "--input-size", "40x48")
    assert code == 0, err
    assert "shape: (-1, 40, 48, 3)" in out
    export_dir = tmp_path / "clothing-model" / "1"
    signature = read_signature_defs(export_dir)["serving_default"]
    assert tensor_contract(signature)["inputs"] == {"images": ("DT_UINT8", [-1, 40, 48, 3])}
    result = serve(load_export(export_dir), sample_batch((40, 48), batch=2))
    assert result["scores"].shape == (2, len(LABELS))


def test_labels_from_flag_and_files(
    keras_model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    custom = [f"class-{i}" for i in range(10)]
    code, _, err = run_main(capsys, keras_model_file, tmp_path, "--labels", ", ".join(custom))
    assert code == 0, err
    text_file = tmp_path / "labels.txt"
    text_file.write_text("\n".join(reversed(custom)) + "\n\n")
    code, _, err = run_main(capsys, keras_model_file, tmp_path, "--labels-file", text_file)
    assert code == 0, err
    json_file = tmp_path / "training-report.json"
    json_file.write_text(json.dumps({"labels": LABELS, "val_accuracy": 0.8}))
    code, _, err = run_main(capsys, keras_model_file, tmp_path, "--labels-file", json_file)
    assert code == 0, err

    base = tmp_path / "clothing-model"
    for version, expected in ((1, custom), (2, custom[::-1]), (3, list(LABELS))):
        loaded = load_export(base / str(version))
        result = serve(loaded, sample_batch(KERAS_SIZE, batch=1))
        assert [label.decode() for label in result["labels"][0]] == expected


# --- warm-up ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("export_name", "size"),
    [("keras_export", KERAS_SIZE), ("h5_export", (XCEPTION_SIZE, XCEPTION_SIZE))],
)
def test_warmup_records_are_the_gateways_requests_for_each_allowed_batch_size(
    export_name: str, size: tuple[int, int], request: pytest.FixtureRequest
) -> None:
    export: ExportResult = request.getfixturevalue(export_name)
    path = export.path / "assets.extra" / "tf_serving_warmup_requests"
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    loaded = load_export(export.path)
    seen = []
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        request_proto = log.predict_log.request
        assert request_proto.model_spec.name == "clothing-model"
        assert list(request_proto.inputs) == ["images"]
        tensor = request_proto.inputs["images"]
        assert tensor.dtype == types_pb2.DT_UINT8
        images = tf.make_ndarray(tensor)
        assert images.dtype == np.uint8
        assert images.shape[1:] == (*size, 3)
        assert images.std() > 10  # photo-like variation, not a blank frame
        signature = request_proto.model_spec.signature_name
        seen.append((signature, list(request_proto.output_filter), images.shape[0]))
        result = loaded.signatures[signature](images=tf.constant(images))
        assert all(value.shape[0] == len(images) for value in result.values())
    # what gateway/tfserving.py sends: scores only, and describe's description on one image
    sizes = read_batching_parameters(BATCHING_FILE).allowed_batch_sizes
    assert sizes and sizes[-1] == read_batching_parameters(BATCHING_FILE).max_batch_size
    assert seen == [("serving_default", ["scores"], n) for n in sizes] + [
        ("describe", ["description"], 1)
    ]


def test_demo_model_warmup_matches_the_batching_configuration() -> None:
    # the committed demo model was re-recorded with --rewrite-warmup, not retrained
    version = REPO_ROOT / "services/model/clothing-model/2"
    path = version / "assets.extra" / "tf_serving_warmup_requests"
    seen = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        request_proto = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        rows = request_proto.inputs["images"].tensor_shape.dim[0].size
        seen.append(
            (request_proto.model_spec.signature_name, list(request_proto.output_filter), rows)
        )
    sizes = read_batching_parameters(BATCHING_FILE).allowed_batch_sizes
    assert seen == [("serving_default", ["scores"], n) for n in sizes] + [
        ("describe", ["description"], 1)
    ]


def test_rewrite_warmup_needs_a_description(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--rewrite-warmup", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convert_model: error: cannot read ") and err.count("\n") == 1


def test_batching_file_without_allowed_sizes_and_a_large_max_is_refused(tmp_path: Path) -> None:
    batching = tmp_path / "batching.txt"
    batching.write_text("max_batch_size { value: 128 }\n")
    with pytest.raises(ConversionError, match="set allowed_batch_sizes"):
        warmup_batch_sizes(batching)
    batching.write_text("max_batch_size { value: 3 }  # small\n")
    assert warmup_batch_sizes(batching) == (1, 2, 3)


# --- serving with TF Serving's batching -------------------------------------------------------


def test_export_loads_and_serves_behind_batching(keras_export: ExportResult) -> None:
    # the devserver splits outputs like TF Serving's BatchingSession, which fails the load when
    # a warm-up record fetches an output without one row per image
    from devserver.server import ModelServer
    from devserver.settings import ModelConfig, Settings
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    settings = Settings(
        models=(ModelConfig("clothing-model", keras_export.path.parent),),
        grpc_port=free_port(),
        rest_api_port=0,
        enable_batching=True,
        batching=read_batching_parameters(BATCHING_FILE),
    )
    server = ModelServer(settings)
    server.start()
    try:
        servable = server.manager.specific("clothing-model", 1)
        assert servable.warmup_records == len(settings.batching.allowed_batch_sizes) + 1
        with grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for key, rows in (("serving_default", 3), ("describe", 1)):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "clothing-model"
                request.model_spec.signature_name = key
                images = sample_batch(KERAS_SIZE, batch=rows, seed=rows)
                request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
                response = stub.Predict(request, timeout=120)
                outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
                assert {k: v.shape[0] for k, v in outputs.items()} == dict.fromkeys(outputs, rows)
                assert outputs["labels"].tolist() == [[x.encode() for x in LABELS]] * rows
        assert json.loads(outputs["description"][0]) == keras_export.description
    finally:
        server.stop(0)


def unbatched_labels_export(model: Any, target: Path, description: dict[str, Any]) -> None:
    """The contract as it was before batching: `labels` [K] and a scalar `description`."""
    import keras

    labels = tf.constant(description["labels"])
    size = (description["input"]["height"], description["input"]["width"])
    spec = [tf.TensorSpec([None, *size, 3], tf.uint8, name="images")]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serving_default(images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = model(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)
        return {"scores": tf.nn.softmax(logits), "labels": labels}

    archive.add_endpoint("serving_default", serving_default, input_signature=spec)
    archive.add_endpoint(
        "describe",
        lambda images: {"description": tf.constant(json.dumps(description)), "labels": labels},
        input_signature=spec,
    )
    archive.write_out(str(target), verbose=False)
    (target / "assets.extra").mkdir()


def test_outputs_without_a_batch_dimension_fail_verification(
    keras_model_file: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clothing_tools import convert_model

    monkeypatch.setattr(convert_model, "write_saved_model", unbatched_labels_export)
    before = snapshot(out_dir)
    code, _, err = run_main(capsys, keras_model_file, out_dir)
    assert_usage_error(code, err, "verification failed: signature")
    assert "'labels': ('DT_STRING', [10])" in err
    assert snapshot(out_dir) == before


class OneLabelRow(tf.Module):
    """`scores` has a row per image but `labels` one row whatever the batch."""

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.uint8)])
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = tf.zeros(tf.stack([tf.shape(images)[0], len(LABELS)]))
        return {"scores": scores, "labels": tf.constant(LABELS)[None]}


def test_run_signature_refuses_an_output_with_rows_not_per_image(tmp_path: Path) -> None:
    from clothing_tools.convert_model import run_signature

    module = OneLabelRow()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(str(tmp_path))
    images = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(ConversionError) as caught:
        run_signature(loaded, "serving_default", images)
    assert str(caught.value) == (
        "verification failed: output 'labels' of 'serving_default' has shape [1, 10] for 3 "
        "images; TF Serving's batching needs every output to have one row per image"
    )
    with pytest.raises(ConversionError, match="no 'describe' signature"):
        run_signature(loaded, "describe", images)
    assert run_signature(loaded, "serving_default", images[:1])["labels"].shape == (1, 10)


# --- printing --------------------------------------------------------------------------------


def test_printed_signatures_match_saved_model_cli(keras_export: ExportResult) -> None:
    from tensorflow.python.tools import saved_model_cli, saved_model_utils

    meta_graph = saved_model_utils.get_meta_graph_def(str(keras_export.path), "serve")
    expected = []
    for key in ("serving_default", "describe"):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            saved_model_cli._show_inputs_outputs_mgd(meta_graph, key, indent=1)
        expected.append(f"signature_def['{key}']:\n" + buffer.getvalue().rstrip("\n"))
    assert format_signatures(keras_export.path) == "\n".join(expected)
    assert keras_export.signature_text == "\n".join(expected)


def test_main_prints_the_signature_and_the_path(
    keras_model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(capsys, keras_model_file, tmp_path, "--name", "shop", "--version", 4)
    assert code == 0, err
    assert "signature_def['serving_default']:" in out
    assert "inputs['images'] tensor_info:" in out
    assert "dtype: DT_UINT8" in out
    assert out.rstrip().splitlines()[-1] == f"exported {tmp_path / 'shop' / '4'}"
    assert (tmp_path / "shop" / "4" / "saved_model.pb").is_file()


# --- versions, atomicity, --force ------------------------------------------------------------


def test_versions_increment_past_the_highest(keras_model_file: Path, out_dir: Path) -> None:
    (out_dir / "clothing-model" / "7").mkdir()
    (out_dir / "clothing-model" / "notes").mkdir()
    first = convert(keras_model_file, out_dir)
    second = convert(keras_model_file, out_dir)
    assert (first.path.name, second.path.name) == ("8", "9")
    assert (first.description["version"], second.description["version"]) == (8, 9)
    assert sorted(p.name for p in (out_dir / "clothing-model").iterdir()) == [
        "1",
        "7",
        "8",
        "9",
        "notes",
    ]
    assert (out_dir / "clothing-model" / "1" / "saved_model.pb").read_bytes() == b"existing version"


def test_existing_version_is_not_overwritten(
    keras_model_file: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(out_dir)
    code, _, err = run_main(capsys, keras_model_file, out_dir, "--version", "1")
    assert_usage_error(code, err, "version 1 already exists")
    assert "--force" in err
    assert snapshot(out_dir) == before


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_force_replaces_the_version_and_nothing_else(
    exchange: bool,
    keras_model_file: Path,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clothing_tools import convert_model

    if not exchange:  # the portable fallback used where renameat2 is missing
        monkeypatch.setattr(convert_model, "_renameat2", lambda *args: False)
    others = snapshot(out_dir / "other-model")
    old_inode = (out_dir / "clothing-model" / "1").stat().st_ino
    code, _, err = run_main(capsys, keras_model_file, out_dir, "--version", "1", "--force")
    assert code == 0, err
    replaced = out_dir / "clothing-model" / "1"
    assert replaced.stat().st_ino != old_inode
    assert (replaced / "saved_model.pb").read_bytes() != b"existing version"
    description = json.loads((replaced / "assets.extra" / "model_description.json").read_text())
    assert description["version"] == 1
    assert sorted(p.name for p in (out_dir / "clothing-model").iterdir()) == ["1"]
    assert snapshot(out_dir / "other-model") == others


def test_failed_verification_leaves_nothing(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a layer that adds noise even at inference: the export cannot reproduce the Keras outputs
    source = save_keras_classifier(models_dir / "noisy.keras", noise=True, augmentation=False)
    out = tmp_path / "fresh" / "out"
    code, _, err = run_main(capsys, source, out)
    assert_usage_error(code, err, "verification failed")
    assert not (tmp_path / "fresh").exists()  # even the folders it created are gone


def test_failed_verification_keeps_the_version_it_would_replace(
    models_dir: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = save_keras_classifier(models_dir / "noisy2.keras", noise=True, augmentation=False)
    before = snapshot(out_dir)
    code, _, err = run_main(capsys, source, out_dir, "--version", "1", "--force")
    assert_usage_error(code, err, "verification failed")
    assert snapshot(out_dir) == before


# --- bad input -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bad_model_files(models_dir: Path) -> dict[str, Path]:
    """Files that are not usable models, by the reason they fail."""
    import tf_keras

    files = {}
    files["text"] = models_dir / "notes.keras"
    files["text"].write_text("this is not a model\n")
    files["empty"] = models_dir / "empty.h5"
    files["empty"].write_bytes(b"")
    files["zip"] = models_dir / "photos.keras"
    with zipfile.ZipFile(files["zip"], "w") as archive:
        archive.writestr("a.txt", "not a keras archive")
    files["truncated"] = models_dir / "truncated.keras"
    with zipfile.ZipFile(files["truncated"], "w") as archive:
        archive.writestr("config.json", "{not json")
    files["weights"] = models_dir / "weights_only.h5"
    weights_model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    with quiet_keras():
        weights_model.save_weights(files["weights"])
    files["grey"] = save_keras_classifier(models_dir / "grey.keras", channels=1, augmentation=False)
    files["sigmoid"] = save_keras_classifier(
        models_dir / "sigmoid.keras", activation="sigmoid", augmentation=False
    )
    files["five"] = save_keras_classifier(
        models_dir / "five.keras", num_classes=5, augmentation=False
    )
    import keras

    vector = keras.Sequential([keras.Input((12,)), keras.layers.Dense(10)])
    files["vector"] = models_dir / "vector.keras"
    with quiet_keras():
        vector.save(files["vector"])
    return files


@pytest.mark.parametrize(
    ("case", "extra_args", "fragment"),
    [
        ("missing", [], "no such model file"),
        ("directory", [], "not a file"),
        ("text", [], "is not a Keras model"),
        ("empty", [], "is not a Keras model"),
        ("zip", [], "is not a Keras model"),
        ("truncated", [], "cannot load"),
        ("weights", [], "cannot load"),
        ("grey", [], "must be [N, H, W, 3]"),
        ("vector", [], "must be [N, H, W, 3]"),
        ("good", ["--preprocessing", "caffe"], "unknown preprocessing 'caffe'"),
        ("good", ["--outputs", "maybe"], "unknown outputs 'maybe'"),
        ("good", ["--interpolation", "sinc"], "unknown interpolation 'sinc'"),
        ("good", ["--labels", "a,b,c"], "3 labels given but the model outputs 10"),
        ("five", [], "10 labels given but the model outputs 5"),
        ("good", ["--labels", "a,a,b,c,d,e,f,g,h,i"], "duplicate labels: a"),
        ("good", ["--labels", "a,,b"], "labels must be non-empty"),
        ("good", ["--labels-file", "/nonexistent/labels.txt"], "cannot read labels file"),
        ("good", ["--labels", "a", "--labels-file", "x"], "not allowed with argument"),
        ("good", ["--version", "0"], "version must be a positive integer"),
        ("good", ["--version", "one"], "invalid int value"),
        ("good", ["--input-size", "big"], "invalid --input-size"),
        ("good", ["--input-size", "64x64"], "does not match the model's 32x32"),
        ("good", ["--name", "../escape"], "invalid model name"),
        ("good", ["--version", "1"], "version 1 already exists"),
        ("good", ["--no-such-flag"], "unrecognized arguments"),
        ("sigmoid", [], "pass --outputs logits or --outputs probabilities"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: str,
    extra_args: list[str],
    fragment: str,
    bad_model_files: dict[str, Path],
    keras_model_file: Path,
    out_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sources = {"good": keras_model_file, "missing": tmp_path / "nope.keras", "directory": tmp_path}
    source = sources.get(case) or bad_model_files[case]
    before = snapshot(out_dir)
    code, out, err = run_main(capsys, source, out_dir, *extra_args)
    assert_usage_error(code, err, fragment)
    assert out == ""
    assert snapshot(out_dir) == before


def test_command_line_error_is_one_line_on_stderr(tmp_path: Path) -> None:
    # a separate process: nothing but the one error line reaches the real stderr
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "missing.keras"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert (
        completed.stderr == f"convert_model: error: no such model file: {tmp_path}/missing.keras\n"
    )
    assert completed.stdout == ""
    assert not (tmp_path / "out").exists()


def test_keras_classifier_factory_has_augmentation_layers() -> None:
    # guards the point of the .keras fixture: the converter must cope with these layers
    model = keras_classifier(size=KERAS_SIZE)
    names = {type(layer).__name__ for layer in model.layers}
    assert {"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation"} <= names
