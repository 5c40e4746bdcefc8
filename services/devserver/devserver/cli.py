"""Command line compatible with `tensorflow_model_server` for the flags it supports.

Flags are parsed (and bad ones refused with one line and exit code 2) before TensorFlow
is imported, so mistakes are reported at once.

Signals: like `tensorflow_model_server`, which installs no handler (tensorflow/serving
`tensorflow_serving/model_servers/main.cc` ends in `server.WaitForTermination()`; issue
1853), SIGTERM and SIGINT take their default action and end the process at once, in-flight
RPCs included. A graceful stop therefore has to come from outside: the pod's preStop hook
and gRPC's max connection age move the gateways away first (see README "Scaling").
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from devserver import __version__
from devserver.config_files import (
    ConfigError,
    read_batching_parameters,
    read_model_config,
    read_monitoring_config,
)
from devserver.settings import BatchingParameters, ModelConfig, Settings

log = logging.getLogger("devserver")

_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0-65535")
    return port


_INT32 = re.compile(r"\s*[+-]?\d+\s*")


def _channel_value(text: str) -> int | str:
    # TF Serving passes a value as an int when absl::SimpleAtoi reads it as an int32
    # (surrounding spaces and a sign allowed), otherwise as a string (server.cc).
    if _INT32.fullmatch(text) and -(2**31) <= int(text) < 2**31:
        return int(text)
    return text


def parse_channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """`name=value,name=value` as tensorflow_model_server's --grpc_channel_arguments reads it.

    tensorflow/serving model_servers/server.cc parseGrpcChannelArgs: split on ",", then
    each on "="; an empty flag means none. TF Serving indexes `key_val[1]` unchecked (a
    part without "=" is undefined behaviour, extra "=" parts are dropped): both are refused.
    """
    if not text:
        return ()
    arguments: list[tuple[str, int | str]] = []
    for part in text.split(","):
        key_value = part.split("=")
        if len(key_value) != 2 or not key_value[0]:
            raise argparse.ArgumentTypeError(
                f"expected name=value in --grpc_channel_arguments, got {part!r}"
            )
        arguments.append((key_value[0], _channel_value(key_value[1])))
    return tuple(arguments)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The flag parser; names and defaults follow tensorflow_model_server."""
    parser = _Parser(
        prog="devserver",
        allow_abbrev=False,
        description="TF Serving-compatible development model server (see README.md).",
    )
    add = parser.add_argument
    add("--port", type=_port, default=8500, help="gRPC port (0 disables gRPC). Default 8500.")
    add("--rest_api_port", type=_port, default=8501, help="REST port (0 disables). Default 8501.")
    add("--grpc_bind_address", default="127.0.0.1", help="devserver only. Default 127.0.0.1.")
    add("--rest_api_bind_address", default="127.0.0.1", help="devserver only. Default 127.0.0.1.")
    add("--model_name", default="default", help="Name of the model. Default 'default'.")
    add("--model_base_path", help="Folder holding numeric version folders.")
    add("--model_config_file", help="ModelServerConfig text proto (overrides the two above).")
    add("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    add("--batching_parameters_file", help="BatchingParameters text proto.")
    add("--file_system_poll_wait_seconds", type=int, default=1, help="<= 0: scan only once.")
    add("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True)
    add(
        "--allow_version_labels_for_unavailable_models",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="Allow version_labels for versions not loaded yet (needed for labels at start-up).",
    )
    add("--grpc_max_threads", type=int, default=64, help="gRPC worker threads. Default 64.")
    add(
        "--grpc_channel_arguments",
        type=parse_channel_arguments,
        default=(),
        help="name=value,... passed to the gRPC server (e.g. grpc.max_connection_age_ms=2000).",
    )
    add(
        "--log_level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="devserver only. 'info' logs one line per request.",
    )
    add("--monitoring_config_file", help="MonitoringConfig text proto (Prometheus on REST).")
    add(
        "--max_num_load_retries",
        type=int,
        default=5,
        help="Accepted for TF Serving's command lines; the devserver never retries a failed load.",
    )
    for pool in ("intra", "inter"):
        add(
            f"--tensorflow_{pool}_op_parallelism",
            type=int,
            default=0,
            help=f"TensorFlow's {pool}-op thread pool size (0: TensorFlow decides).",
        )
    add("--version", action="version", version=f"devserver {__version__}")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Typed settings from parsed flags; ConfigError for unusable combinations or files."""
    if args.model_config_file:
        models = read_model_config(Path(args.model_config_file))
    elif args.model_base_path:
        if not args.model_name:
            raise ConfigError("--model_name must not be empty")
        models = (ModelConfig(args.model_name, Path(args.model_base_path).absolute()),)
    else:
        raise ConfigError("one of --model_base_path or --model_config_file is required")
    models = tuple(
        ModelConfig(m.name, m.base_path.absolute(), m.policy, m.version_labels) for m in models
    )
    if not args.port and not args.rest_api_port:
        raise ConfigError("at least one of --port and --rest_api_port must be non-zero")
    if args.port and args.port == args.rest_api_port:
        raise ConfigError("--rest_api_port must be different from --port")
    if args.grpc_max_threads < 1:
        raise ConfigError("--grpc_max_threads must be at least 1")
    monitoring_path = None
    if args.monitoring_config_file:
        monitoring_path = read_monitoring_config(Path(args.monitoring_config_file))
    batching = BatchingParameters()
    if args.batching_parameters_file:
        batching = read_batching_parameters(Path(args.batching_parameters_file))
    return Settings(
        models=models,
        grpc_port=args.port,
        grpc_bind_address=args.grpc_bind_address,
        rest_api_port=args.rest_api_port,
        rest_api_bind_address=args.rest_api_bind_address,
        enable_batching=args.enable_batching,
        batching=batching,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_model_warmup=args.enable_model_warmup,
        grpc_max_threads=args.grpc_max_threads,
        allow_version_labels_for_unavailable_models=(
            args.allow_version_labels_for_unavailable_models
        ),
        grpc_channel_arguments=args.grpc_channel_arguments,
        monitoring_path=monitoring_path,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, start the server, serve until a signal ends the process."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as err:
        print(f"devserver: error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    if args.batching_parameters_file and not settings.enable_batching:
        log.warning("--batching_parameters_file is ignored without --enable_batching")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    if args.max_num_load_retries > 0:
        log.info("--max_num_load_retries: the devserver loads each version once, never retries")
    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        import tensorflow as tf

        # as tensorflow_model_server does with these flags, before any model is loaded
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)

    from devserver.manager import StartupError
    from devserver.server import ModelServer

    # No handler, as in tensorflow_model_server: the default action ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    server = ModelServer(settings)
    try:
        server.start()
    except (StartupError, OSError) as err:
        print(f"devserver: Failed to start server. Error: {err}", file=sys.stderr)
        server.stop(0)
        return 1
    threading.Event().wait()  # WaitForTermination(): only a signal ends the process
    return 0  # pragma: no cover - never reached
