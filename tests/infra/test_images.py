"""The image build inputs: content-derived tags, the Dockerfiles and TF Serving's config files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clothing_infra.images import EMPTY_CONTEXT, content_tag
from clothing_infra.model_serving import INIT, SERVER, tf_serving_args
from clothing_infra.pods import RUN_AS_USER

from tests.infra.support import REPO_ROOT, write_model_layout

MODEL = REPO_ROOT / "services" / "model"
GATEWAY = REPO_ROOT / "services" / "gateway"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A build context like services/gateway: Dockerfile, .dockerignore, a package."""
    root = tmp_path / "context"
    (root / "app").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY app/ /app/\n")
    (root / ".dockerignore").write_text("*\n!app/\n**/__pycache__\n**/.DS_Store\n")
    (root / "app" / "main.py").write_text("print('hello')\n")
    return root


def test_content_tag_ignores_what_dockerignore_keeps_out_of_the_context(context: Path) -> None:
    tag = content_tag(context, {"A": "1"})
    assert re.fullmatch(r"sha-[0-9a-f]{20}", tag)
    assert content_tag(context, {"A": "1"}) == tag
    (context / "app" / "__pycache__").mkdir()
    (context / "app" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (context / "app" / ".DS_Store").write_bytes(b"\0")
    (context / "README.md").write_text("notes, outside the context")
    assert content_tag(context, {"A": "1"}) == tag


@pytest.mark.parametrize(
    "change",
    ["build-arg", "content", "rename", "new-file", "cache-folder", "mode", "dockerfile"],
)
def test_content_tag_changes_whenever_docker_build_would_rebuild(
    context: Path, change: str
) -> None:
    # pulumi-docker-build hashes each kept file's path, bytes and mode, plus the Dockerfile
    # (provider/internal/context.go, hashBuildContext): each such change needs a new tag, or
    # the immutable ECR repository refuses the rebuilt image's push.
    tag = content_tag(context, {"A": "1"})
    args = {"A": "1"}
    main = context / "app" / "main.py"
    if change == "build-arg":
        args = {"A": "2"}
    elif change == "content":
        main.write_text("print('bye')\n")
    elif change == "rename":
        main.rename(context / "app" / "other.py")
    elif change == "new-file":
        (context / "app" / "extra.txt").write_text("x")
    elif change == "cache-folder":  # not in .dockerignore, so Docker sends it
        (context / "app" / ".mypy_cache").mkdir()
        (context / "app" / ".mypy_cache" / "x.json").write_text("{}")
    elif change == "mode":
        main.chmod(0o600)
    elif change == "dockerfile":
        (context / "Dockerfile").write_text("FROM scratch\nCOPY app/ /srv/\n")
    assert content_tag(context, args) != tag


def test_content_tag_covers_every_file_of_a_named_context(context: Path, tmp_path: Path) -> None:
    model = write_model_layout(tmp_path / "model")
    tag = content_tag(context, {}, {"model": model})
    assert tag != content_tag(context, {})
    (model / "1" / "saved_model.pb").chmod(0o600)
    assert content_tag(context, {}, {"model": model}) != tag


def _instructions(dockerfile: Path) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _final_stage(lines: list[str]) -> list[str]:
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM"))
    return lines[last_from:]


@pytest.mark.parametrize("dockerfile", [MODEL / "Dockerfile", GATEWAY / "Dockerfile"])
def test_files_from_the_checkout_get_their_modes_in_the_dockerfile(dockerfile: Path) -> None:
    # A checkout made with umask 077 has files only root can read; the servers run as 10001.
    for line in _final_stage(_instructions(dockerfile)):
        if not line.startswith("COPY") or "--from=build" in line:
            continue  # the virtualenv is built inside the image, with the image's umask
        chmod = re.search(r"--chmod=(0?[0-7]{3})\b", line)
        assert chmod, line
        mode = int(chmod.group(1), 8)
        assert mode & 0o444 == 0o444, line  # readable by everyone
        assert mode & 0o222 == 0, line  # writable by no one
        sources = [part for part in line.split()[1:] if not part.startswith("--")][:-1]
        if any(source.endswith("/") for source in sources):
            assert mode & 0o111 == 0o111, line  # folders must be searchable


def test_model_image_is_tf_serving_with_tini_both_versions_and_a_non_root_user() -> None:
    lines = _instructions(MODEL / "Dockerfile")
    assert "ARG TF_SERVING_TAG=2.21.0" in lines
    assert "FROM tensorflow/serving:${TF_SERVING_TAG}" in lines
    assert "COPY clothing-model/ /" in lines
    assert "COPY no-canary/ /" in lines
    assert "COPY --from=model --chmod=0555 / /models/${MODEL_NAME}/" in lines
    assert "COPY --from=canary --chmod=0555 / /models/${MODEL_NAME}/" in lines
    assert "COPY --chmod=0444 batching_parameters.txt monitoring.config /etc/tfserving/" in lines
    assert any("tini=" in line and "apt-get install" in line for line in lines)
    assert any("/etc/tfserving/models.config" in line and "MODEL_CONFIG" in line for line in lines)
    assert f"USER {RUN_AS_USER}:{RUN_AS_USER}" in lines
    assert any(line.startswith("HEALTHCHECK") and "AVAILABLE" in line for line in lines)
    entrypoint = next(line for line in lines if line.startswith("ENTRYPOINT"))
    assert entrypoint.startswith(f'ENTRYPOINT ["{INIT[0]}"')
    # The Deployment runs the server under the same init.
    assert INIT[0] == "/usr/bin/tini" and SERVER == "/usr/bin/tensorflow_model_server"
    cmd = next(line for line in lines if line.startswith("CMD"))
    # The image's own default flags match the ones the Deployment passes.
    flags = (
        "--enable_batching",
        "--batching_parameters_file=/etc/tfserving/batching_parameters.txt",
        "--monitoring_config_file=/etc/tfserving/monitoring.config",
        "--max_num_load_retries=0",
    )
    for flag in flags:
        assert flag in cmd
        assert flag in tf_serving_args(2)


def test_gateway_image_runs_gunicorn_from_app_as_a_non_root_user() -> None:
    lines = _instructions(GATEWAY / "Dockerfile")
    assert any("pip install --no-cache-dir --require-hashes" in line for line in lines)
    assert "WORKDIR /app" in lines
    assert "COPY --chmod=0444 gunicorn.conf.py ./" in lines
    assert "COPY --chmod=0555 gateway/ ./gateway/" in lines
    assert f"USER {RUN_AS_USER}:{RUN_AS_USER}" in lines
    assert "EXPOSE 9696 9697" in lines
    assert lines[-1] == 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "gateway.wsgi:app"]'
    for line in lines:
        if line.startswith("FROM"):
            assert not line.split()[1].endswith(":latest") and ":" in line


def test_build_contexts_send_only_what_the_images_copy() -> None:
    for context, needed in (
        (MODEL, ["batching_parameters.txt", "monitoring.config", "clothing-model/", "no-canary/"]),
        (GATEWAY, ["gateway/", "gunicorn.conf.py", "requirements.txt"]),
    ):
        ignore = (context / ".dockerignore").read_text().splitlines()
        assert "*" in ignore
        for path in needed:
            assert f"!{path}" in ignore
            assert (context / path.rstrip("/")).exists()
    # The canary stand-in holds no model version.
    assert not [p for p in EMPTY_CONTEXT.iterdir() if p.name.isdigit()]


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
