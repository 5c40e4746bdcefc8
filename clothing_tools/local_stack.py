"""Run the model server and the gateway on loopback: `make local`.

    python scripts/local_stack.py [--model-base-path services/model/clothing-model]
                                  [--model-name clothing-model] [--workers 2]
                                  [--canary-model-path DIR [--canary-percent 10]
                                   [--shadow-percent 0]]

Ports come from GATEWAY_PORT (9696), GATEWAY_METRICS_PORT (9697, the gateway's Prometheus
metrics), MODEL_GRPC_PORT (8500) and MODEL_REST_PORT (8501).
The model server is `tensorflow_model_server` when it is on PATH, else the development server
(`services/devserver`, run by this Python); the gateway runs under gunicorn from
`.venv-gateway`. Ctrl-C or SIGTERM stops both cleanly (gateway first).

With `--canary-model-path`, the model server serves the newest version under
`--model-base-path` labelled `stable` and the newest under the canary path labelled `canary`
(a ModelServerConfig with `version_labels`, as in production), and the gateway sends
`--canary-percent` of requests to the canary and shadows `--shadow-percent` of the rest.

`start_model_server` and `start_gateway` are context managers reused by the end-to-end tests
and the benchmarks, with `model_server_command`, `http_get`, `wait_until_ready` and `stop`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from gateway.contract import version_dirs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_BASE = REPO / "services" / "model" / "clothing-model"
GATEWAY_DIR = REPO / "services" / "gateway"
GATEWAY_PYTHON = REPO / ".venv-gateway" / "bin" / "python"
PROG = "local_stack"


class StackError(Exception):
    """A process of the stack could not be started; reported as one line, exit code 2."""


@dataclass(frozen=True)
class Running:
    """A started process and where it answers."""

    process: subprocess.Popen[bytes]
    url: str
    grpc_target: str = ""
    metrics_url: str = ""  # the gateway's Prometheus endpoint (its own port)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def common_free_port(hosts: Sequence[str]) -> int:
    """A TCP port free on every one of these loopback addresses (one port, many "pods")."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as other:
                    other.bind((host, port))
        except OSError:
            continue
        return port
    raise OSError(f"no TCP port free on every one of {', '.join(hosts)}")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a loopback URL: (status, body), or (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def wait_until_ready(
    process: subprocess.Popen[bytes], ready: Any, what: str, timeout: float, log: Path | None
) -> None:
    """Poll `ready()` until it is true; StackError if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode}{_tail(log)}")
        if ready():
            return
        time.sleep(0.2)
    raise StackError(f"{what} was not ready after {timeout:.0f} s{_tail(log)}")


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    lines = log.read_text(errors="replace").splitlines()[-15:]
    return "; last log lines:\n" + "\n".join(lines)


def stop(process: subprocess.Popen[bytes], grace: float = 20.0) -> int:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _output(log: Path | None) -> IO[bytes] | None:
    if log is None:
        return None  # inherit the terminal
    log.parent.mkdir(parents=True, exist_ok=True)
    return log.open("ab")


def model_config_text(model_name: str, base_path: Path, labels: Mapping[str, int]) -> str:
    """A ModelServerConfig text proto serving exactly the labelled versions of one model."""
    versions = "".join(f"versions: {v} " for v in sorted(set(labels.values())))
    label_lines = "".join(
        f"    version_labels {{ key: {json.dumps(label)} value: {version} }}\n"
        for label, version in sorted(labels.items())
    )
    return (
        "model_config_list {\n  config {\n"
        f"    name: {json.dumps(model_name)}\n"
        f"    base_path: {json.dumps(str(base_path.resolve()))}\n"
        '    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ specific {{ {versions}}} }}\n"
        f"{label_lines}  }}\n}}\n"
    )


def newest_version(base_path: Path) -> int:
    """The highest numeric version folder under a model base directory (StackError if none)."""
    versions = version_dirs(base_path) if base_path.is_dir() else []
    if not versions:
        raise StackError(f"no model version folder under {base_path}")
    return int(versions[-1].name)


def stable_and_canary(stable_base: Path, canary_base: Path, workdir: Path, model_name: str) -> Path:
    """Lay out the newest version of each base side by side and write the labelled config.

    TF Serving serves the versions of one model from one base directory, so `workdir/<name>/`
    gets a link to each version folder; returns the `--model_config_file` path.
    """
    stable, canary = newest_version(stable_base), newest_version(canary_base)
    if canary <= stable:
        raise StackError(
            f"the canary's version ({canary}, {canary_base}) must be above the stable "
            f"version ({stable}, {stable_base}): TF Serving tells versions apart by number"
        )
    base = workdir / model_name
    base.mkdir(parents=True, exist_ok=True)
    for version, source in ((stable, stable_base), (canary, canary_base)):
        link = base / str(version)
        if not link.exists():
            link.symlink_to((source / str(version)).resolve(), target_is_directory=True)
    config = workdir / "models.config"
    text = model_config_text(model_name, base, {"stable": stable, "canary": canary})
    config.write_text(text, encoding="utf-8")
    return config


def model_server_command(
    model_base_path: Path,
    model_name: str,
    grpc_port: int,
    rest_port: int,
    python: str,
    *,
    host: str = "127.0.0.1",
    model_config_file: Path | None = None,
) -> list[str]:
    """tensorflow_model_server's command line if installed, else the development server's."""
    flags = [f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
    if model_config_file is not None:
        # labels in a config read at start-up need this flag in TF Serving (server_core.cc)
        flags += [
            f"--model_config_file={model_config_file.resolve()}",
            "--allow_version_labels_for_unavailable_models=true",
        ]
    else:
        flags += [f"--model_name={model_name}", f"--model_base_path={model_base_path.resolve()}"]
    binary = shutil.which("tensorflow_model_server")
    if binary:
        return [binary, *flags]  # binds every interface; `host` is where it is reached
    return [
        python, "-m", "devserver", *flags,
        f"--grpc_bind_address={host}", f"--rest_api_bind_address={host}",
    ]  # fmt: skip


@contextmanager
def start_model_server(
    model_base_path: Path = DEFAULT_MODEL_BASE,
    *,
    model_name: str = "clothing-model",
    grpc_port: int = 8500,
    rest_port: int = 8501,
    python: str = sys.executable,
    log: Path | None = None,
    timeout: float = 180.0,
    host: str = "127.0.0.1",
    model_config_file: Path | None = None,
) -> Iterator[Running]:
    """Run a model server on a loopback address until the model is AVAILABLE; stop on exit."""
    if model_config_file is None:
        newest_version(model_base_path)  # StackError when there is none
    command = model_server_command(
        model_base_path, model_name, grpc_port, rest_port, python,
        host=host, model_config_file=model_config_file,
    )  # fmt: skip
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = _output(log)
    process = subprocess.Popen(
        command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )  # fmt: skip
    rest = f"http://{host}:{rest_port}"

    def available() -> bool:
        status, body = http_get(f"{rest}/v1/models/{model_name}")
        if status != 200:
            return False
        states = [v.get("state") for v in json.loads(body).get("model_version_status", [])]
        return "AVAILABLE" in states

    try:
        wait_until_ready(process, available, "the model server", timeout, log)
        yield Running(process, rest, f"{host}:{grpc_port}")
    finally:
        stop(process)
        if out:
            out.close()


@contextmanager
def start_gateway(
    *,
    tf_serving_host: str = "127.0.0.1:8500",
    port: int = 9696,
    metrics_port: int | None = None,
    python: Path = GATEWAY_PYTHON,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[Running]:
    """Run the gateway under gunicorn on 127.0.0.1 until /readyz answers 200; stop on exit.

    Its metrics listener gets `metrics_port`, or a free port when None (so several gateways can
    run side by side).
    """
    if not Path(python).exists():
        raise StackError(f"{python} not found; run `make gateway-env` first")
    metrics_port = free_port() if metrics_port is None else metrics_port
    environment = dict(os.environ)
    environment.update({
        "TF_SERVING_HOST": tf_serving_host,
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_METRICS_BIND": f"127.0.0.1:{metrics_port}",
    })  # fmt: skip
    environment.update(env or {})
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes a fresh one
    environment.pop("PYTHONPATH", None)
    out = _output(log)
    process = subprocess.Popen(
        [str(python), "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway.wsgi:app"],
        cwd=GATEWAY_DIR, env=environment, stdout=out,
        stderr=subprocess.STDOUT if out else None, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            return http_get(f"{url}/readyz")[0] == 200

        wait_until_ready(process, ready, "the gateway", timeout, log)
        yield Running(process, url, metrics_url=f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        stop(process)
        if out:
            out.close()


def _port(variable: str, default: int, environ: Mapping[str, str]) -> int:
    raw = environ.get(variable, "") or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{variable}={raw!r} is not a port number")
    return int(raw)


def _stop_once(signum: int, frame: FrameType | None) -> None:
    # make and uv pass Ctrl-C on too: ignore the repeats so the clean stop is not cut short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", type=Path, default=DEFAULT_MODEL_BASE)
    parser.add_argument("--model-name", default="clothing-model")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--canary-model-path",
        type=Path,
        help="a second model base directory whose newest version is served as `canary`",
    )
    parser.add_argument(
        "--canary-percent", type=float, default=10.0,
        help="share of requests sent to the canary (with --canary-model-path; default 10)",
    )  # fmt: skip
    parser.add_argument(
        "--shadow-percent", type=float, default=0.0,
        help="share of stable requests also scored by the canary and compared (default 0)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_once)
    signal.signal(signal.SIGINT, _stop_once)
    try:
        gateway_port = _port("GATEWAY_PORT", 9696, os.environ)
        metrics_port = _port("GATEWAY_METRICS_PORT", 9697, os.environ)
        grpc_port = _port("MODEL_GRPC_PORT", 8500, os.environ)
        rest_port = _port("MODEL_REST_PORT", 8501, os.environ)
        gateway_env = {
            "GATEWAY_ALLOW_PRIVATE_URLS": os.environ.get("GATEWAY_ALLOW_PRIVATE_URLS") or "true",
            "GATEWAY_MODEL_NAME": args.model_name,
            "GATEWAY_WORKERS": os.environ.get("GATEWAY_WORKERS") or str(args.workers),
        }
        base, config, served = args.model_base_path, None, str(args.model_base_path)
        cleanup = ExitStack()
        if args.canary_model_path is not None:
            for flag, value in (("--canary-percent", args.canary_percent),
                                ("--shadow-percent", args.shadow_percent)):  # fmt: skip
                if not 0 <= value <= 100:
                    raise StackError(f"{flag} must be between 0 and 100, got {value:g}")
            workdir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="local-stack-"))
            config = stable_and_canary(
                args.model_base_path, args.canary_model_path, Path(workdir), args.model_name
            )
            base = Path(workdir) / args.model_name
            served = (
                f"stable {args.model_base_path} + canary {args.canary_model_path} "
                f"({args.canary_percent:g} % canary, {args.shadow_percent:g} % shadow)"
            )
            gateway_env["GATEWAY_CANARY_PERCENT"] = str(args.canary_percent)
            gateway_env["GATEWAY_SHADOW_PERCENT"] = str(args.shadow_percent)
        print(f"{PROG}: starting the model server on 127.0.0.1:{grpc_port} "
              f"(REST {rest_port}) with {served} ...", flush=True)  # fmt: skip
        with cleanup, start_model_server(
            base, model_name=args.model_name, grpc_port=grpc_port,
            rest_port=rest_port, model_config_file=config,
        ) as model:  # fmt: skip
            print(f"{PROG}: starting the gateway on 127.0.0.1:{gateway_port} ...", flush=True)
            with start_gateway(
                tf_serving_host=model.grpc_target, port=gateway_port, metrics_port=metrics_port,
                env=gateway_env,
            ) as gateway:  # fmt: skip
                _announce(gateway, model.url, args.model_name)
                while model.process.poll() is None and gateway.process.poll() is None:
                    time.sleep(0.5)
                print(f"{PROG}: a process exited; stopping", file=sys.stderr)
                return 1
    except StackError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: stopped", flush=True)
        return 0


def _announce(running: Running, model_rest: str, model_name: str) -> None:
    gateway = running.url
    print(
        f"""
{PROG}: ready.
  gateway       {gateway}/          (web page, if installed)
  API document  {gateway}/openapi.json
  health        {gateway}/healthz   {gateway}/readyz
  metrics       {running.metrics_url}   (its own port, never the gateway's)
  model server  {model_rest}/v1/models/{model_name}

Try it (private URLs are allowed locally):
  curl -s -X POST {gateway}/predict -H 'Content-Type: application/json' \\
       -d '{{"url": "https://example.com/pants.jpg"}}'
  curl -s -X POST {gateway}/predict -F file=@photo.jpg

Ctrl-C stops both.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
