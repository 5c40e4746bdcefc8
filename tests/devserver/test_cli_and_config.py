"""Flag parsing and TF Serving's text-proto config files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from clothing_infra.model_serving import tf_serving_args
from devserver.cli import build_parser, main, settings_from_args
from devserver.config_files import (
    ConfigError,
    parse_batching_parameters,
    parse_model_config,
)
from devserver.settings import BatchingParameters, VersionPolicy

REPO_ROOT = Path(__file__).resolve().parents[2]
DEVSERVER_PATH = REPO_ROOT / "services" / "devserver"


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model_base_path=/m", "--bogus=1"], "unrecognized arguments: --bogus=1"),
        (["--model_base_path=/m", "--port=abc"], "invalid port 'abc'"),
        (["--model_base_path=/m", "--port=70000"], "port 70000 is out of range"),
        (["--model_base_path=/m", "--enable_batching=maybe"], "expected true or false"),
        (["--model_base_path=/m", "--mod=x"], "unrecognized arguments: --mod=x"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    line = one_line_error(capsys)
    assert line.startswith("devserver: error: ") and needle in line


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "one of --model_base_path or --model_config_file is required"),
        (["--model_base_path=/m", "--port=0", "--rest_api_port=0"], "at least one of --port"),
        (["--model_base_path=/m", "--port=9000", "--rest_api_port=9000"], "must be different"),
        (["--model_base_path=/m", "--batching_parameters_file=/nonexistent"], "cannot read"),
    ],
)
def test_unusable_settings_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert line.startswith("devserver: error: ") and needle in line


def test_unknown_flag_from_the_command_line_is_one_line_and_exit_code_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devserver", "--model_base_path=/m", "--enable_batchin"],
        cwd=DEVSERVER_PATH,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == "devserver: error: unrecognized arguments: --enable_batchin\n"


def test_flags_in_both_spellings_and_defaults(tmp_path: Path) -> None:
    batching_file = tmp_path / "batching.txt"
    batching_file.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n")
    args = build_parser().parse_args(
        [
            "--port",
            "9500",
            "--rest_api_port=0",
            "--model_name=clothing-model",
            "--model_base_path",
            "models/clothing-model",
            "--enable_batching",
            f"--batching_parameters_file={batching_file}",
            "--file_system_poll_wait_seconds=0",
        ]
    )
    settings = settings_from_args(args)
    assert settings.grpc_port == 9500 and settings.rest_api_port == 0
    assert settings.grpc_bind_address == settings.rest_api_bind_address == "127.0.0.1"
    (model,) = settings.models
    assert model.name == "clothing-model"
    assert model.base_path == Path("models/clothing-model").absolute()
    assert model.policy == VersionPolicy("latest", 1)
    assert settings.enable_batching and settings.enable_model_warmup
    assert settings.batching.max_batch_size == 32
    assert settings.batching.batch_timeout_micros == 2000
    assert settings.file_system_poll_wait_seconds == 0

    defaults = settings_from_args(build_parser().parse_args(["--model_base_path=/m"]))
    assert (defaults.grpc_port, defaults.rest_api_port) == (8500, 8501)
    assert defaults.models[0].name == "default"
    assert not defaults.enable_batching
    flag_off = build_parser().parse_args(["--model_base_path=/m", "--enable_model_warmup=false"])
    assert not settings_from_args(flag_off).enable_model_warmup
    assert not defaults.allow_version_labels_for_unavailable_models
    labels_on = build_parser().parse_args(
        ["--model_base_path=/m", "--allow_version_labels_for_unavailable_models=true"]
    )
    assert settings_from_args(labels_on).allow_version_labels_for_unavailable_models


def test_batching_parameters_text_proto() -> None:
    params = parse_batching_parameters(
        """
        # comments and both field syntaxes are accepted, as protobuf's parser does
        max_batch_size { value: 16 }
        batch_timeout_micros: { value: 500 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 4 }
        thread_pool_name { value: "pool" }
        allowed_batch_sizes: 8
        allowed_batch_sizes: 16
        """
    )
    assert params == BatchingParameters(
        max_batch_size=16,
        batch_timeout_micros=500,
        max_enqueued_batches=100,
        num_batch_threads=4,
        thread_pool_name="pool",
        allowed_batch_sizes=(8, 16),
    )
    assert parse_batching_parameters("").max_batch_size == 1000


def test_the_projects_batching_file_parses() -> None:
    path = REPO_ROOT / "services" / "model" / "batching_parameters.txt"
    if not path.is_file():
        pytest.skip("services/model/batching_parameters.txt is not there")
    params = parse_batching_parameters(path.read_text(), str(path))
    assert params.max_batch_size >= 1 and params.num_batch_threads >= 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("max_batch_size { value: 8 } pad_variable_length_inputs: true", "is not supported"),
        ("max_batch_size { value: 8 } enable_large_batch_splitting { value: true }", "no field"),
        ("max_batch_size: 8", "max_batch_size"),
        ("max_batch_size { value: 0 }", "max_batch_size must be at least 1"),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; "
            "expected 8",
        ),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4", "increasing"),
    ],
)
def test_bad_batching_parameters(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_batching_parameters(text)


def test_model_config_file() -> None:
    models = parse_model_config(
        """
        model_config_list {
          config {
            name: "clothing-model"
            base_path: "/models/clothing-model"
            model_platform: "tensorflow"
            model_version_policy { specific { versions: 1 versions: 2 } }
            version_labels { key: "stable" value: 1 }
            version_labels { key: "canary" value: 2 }
          }
          config { name: "other" base_path: "/models/other" model_version_policy { all {} } }
        }
        """
    )
    assert [m.name for m in models] == ["clothing-model", "other"]
    assert models[0].policy == VersionPolicy("specific", versions=(1, 2))
    assert dict(models[0].version_labels) == {"stable": 1, "canary": 2}
    assert models[1].policy == VersionPolicy("all")


@pytest.mark.parametrize(
    "text",
    [
        "model_config_list { config { name: 'x' } }",
        "model_config_list { config { name: 'x' base_path: '/a' }"
        " config { name: 'x' base_path: '/b' } }",
        "model_config_list { config { name: 'x' base_path: '/a' model_platform: 'onnx' } }",
        "nonsense",
    ],
)
def test_bad_model_config(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_model_config(text)


def test_version_policies_pick_versions() -> None:
    present = [3, 1, 10, 2]
    assert VersionPolicy().aspired(present) == [10]
    assert VersionPolicy("latest", num_versions=2).aspired(present) == [3, 10]
    assert VersionPolicy("all").aspired(present) == [1, 2, 3, 10]
    assert VersionPolicy("specific", versions=(2, 7)).aspired(present) == [2]


def test_every_flag_the_pulumi_program_gives_tf_serving_parses_in_the_devserver() -> None:
    # the same command line runs locally (make scale) and in the pod; TF Serving would only
    # warn about a flag it does not know, the devserver refuses it, so drift shows up here
    args = build_parser().parse_args(tf_serving_args(cpu_threads=2))
    assert args.allow_version_labels_for_unavailable_models is True
    assert args.max_num_load_retries == 0
    assert (args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism) == (2, 2)
    assert dict(args.grpc_channel_arguments)["grpc.max_connection_age_ms"] == 30000
