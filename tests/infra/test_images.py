"""The image build inputs: content-derived tags, the Dockerfiles and TF Serving's config files."""

from __future__ import annotations

import re
from pathlib import Path

from clothing_infra.images import content_tag
from clothing_infra.labels import RUN_AS_USER
from clothing_infra.model_serving import tf_serving_args

from tests.infra.conftest import REPO_ROOT, write_model_layout

MODEL = REPO_ROOT / "services" / "model"
GATEWAY = REPO_ROOT / "services" / "gateway"


def test_content_tag_follows_the_image_inputs_and_the_build_arguments(tmp_path: Path) -> None:
    context = write_model_layout(tmp_path / "context")
    tag = content_tag([context], {"TF_SERVING_TAG": "2.21.0"})
    assert re.fullmatch(r"sha-[0-9a-f]{20}", tag)
    assert content_tag([context], {"TF_SERVING_TAG": "2.21.0"}) == tag
    assert content_tag([context], {"TF_SERVING_TAG": "2.21.0-gpu"}) != tag
    cache = context / "__pycache__"
    cache.mkdir()
    (cache / "x.cpython-311.pyc").write_bytes(b"\0")
    assert content_tag([context], {"TF_SERVING_TAG": "2.21.0"}) == tag
    (context / "1" / "saved_model.pb").write_bytes(b"\x08\x02")
    changed = content_tag([context], {"TF_SERVING_TAG": "2.21.0"})
    assert changed != tag
    (context / "1" / "saved_model.pb").rename(context / "1" / "saved_model2.pb")
    assert content_tag([context], {"TF_SERVING_TAG": "2.21.0"}) not in (tag, changed)
    # Files are taken one by one too, so a README beside them does not change the tag.
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: true }")
    with_config = content_tag([config, context], {})
    (tmp_path / "README.md").write_text("notes")
    assert content_tag([config, context], {}) == with_config


def _instructions(dockerfile: Path) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_model_image_is_tf_serving_with_the_whole_model_folder_as_a_non_root_user() -> None:
    lines = _instructions(MODEL / "Dockerfile")
    assert "ARG TF_SERVING_TAG=2.21.0" in lines
    assert "FROM tensorflow/serving:${TF_SERVING_TAG}" in lines
    assert "COPY clothing-model/ /" in lines
    assert "COPY --from=model / /models/${MODEL_NAME}/" in lines
    assert "COPY batching_parameters.txt monitoring.config /etc/tfserving/" in lines
    assert f"USER {RUN_AS_USER}:{RUN_AS_USER}" in lines
    assert any(line.startswith("HEALTHCHECK") and "AVAILABLE" in line for line in lines)
    cmd = next(line for line in lines if line.startswith("CMD"))
    # The image's own default flags match the ones the Deployment passes.
    flags = (
        "--enable_batching",
        "--batching_parameters_file=/etc/tfserving/batching_parameters.txt",
        "--monitoring_config_file=/etc/tfserving/monitoring.config",
    )
    for flag in flags:
        assert flag in cmd
        assert flag in tf_serving_args("clothing-model")


def test_gateway_image_runs_gunicorn_from_app_as_a_non_root_user() -> None:
    lines = _instructions(GATEWAY / "Dockerfile")
    assert any("pip install --no-cache-dir --require-hashes" in line for line in lines)
    assert "WORKDIR /app" in lines
    assert "COPY gunicorn.conf.py ./" in lines
    assert "COPY gateway/ ./gateway/" in lines
    assert f"USER {RUN_AS_USER}:{RUN_AS_USER}" in lines
    assert "EXPOSE 9696" in lines
    assert lines[-1] == 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "gateway.wsgi:app"]'
    for line in lines:
        if line.startswith("FROM"):
            assert not line.split()[1].endswith(":latest") and ":" in line


def test_build_contexts_send_only_what_the_images_copy() -> None:
    for context, needed in (
        (MODEL, ["batching_parameters.txt", "monitoring.config", "clothing-model/"]),
        (GATEWAY, ["gateway/", "gunicorn.conf.py", "requirements.txt"]),
    ):
        ignore = (context / ".dockerignore").read_text().splitlines()
        assert "*" in ignore
        for path in needed:
            assert f"!{path}" in ignore
            assert (context / path.rstrip("/")).exists() or path == "clothing-model/"


def test_tf_serving_config_files() -> None:
    batching = (MODEL / "batching_parameters.txt").read_text()
    for field in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
    ):
        assert re.search(rf"^{field} {{ value: \d+ }}$", batching, re.MULTILINE), field
    monitoring = (MODEL / "monitoring.config").read_text()
    assert "enable: true" in monitoring
    assert 'path: "/monitoring/prometheus/metrics"' in monitoring
