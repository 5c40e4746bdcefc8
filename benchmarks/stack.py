"""Starting the processes under test and reading their CPU and memory.

Our gateway starts through `scripts/local_stack.py` (the same helper as `make local` and the
end-to-end tests). The model server needs flags that helper does not take (two models, server
side batching), and the seed-style gateway is a different program, so those two launchers live
here, built on local_stack's command line, readiness wait and stop.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.config import BATCHING_PARAMETERS, REPO, SEED_VENV, BenchError
from clothing_tools.local_stack import (
    Running,
    free_port,
    http_get,
    model_server_command,
    start_gateway,
    stop,
    wait_until_ready,
)


@dataclass(frozen=True)
class Gateway:
    """A running gateway: which one, where it answers and its gunicorn master's pid."""

    label: str
    url: str
    pid: int


@contextmanager
def model_server(
    models: Sequence[tuple[str, Path]], *, batching: bool, work: Path, log: Path
) -> Iterator[Running]:
    """The model server (as `make local` starts it) serving every (name, base path), with
    server-side batching on or off; waits until every model is AVAILABLE."""
    grpc_port, rest_port = free_port(), free_port()
    config = work / "models.config"
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{base.resolve()}" }}\n' for name, base in models
    )
    config.write_text(f"model_config_list {{\n{entries}}}\n", "utf-8")
    first_name, first_base = models[0]
    command = model_server_command(first_base, first_name, grpc_port, rest_port, sys.executable)
    command.append(f"--model_config_file={config}")
    if batching:
        command += ["--enable_batching", f"--batching_parameters_file={BATCHING_PARAMETERS}"]
    if "devserver" in command:
        command.append("--log_level=warning")  # TF Serving logs no line per request either
    env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    with _started(command, env, log) as process:
        rest = f"http://127.0.0.1:{rest_port}"

        def available() -> bool:
            answers = [http_get(f"{rest}/v1/models/{name}") for name, _ in models]
            return all(status == 200 and b"AVAILABLE" in body for status, body in answers)

        wait_until_ready(process, available, "the model server", 240, log)
        yield Running(process, rest, f"127.0.0.1:{grpc_port}")


@contextmanager
def our_gateway(
    model: Running,
    *,
    workers: int,
    threads: int,
    log: Path,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Gateway]:
    """Our gateway under gunicorn from .venv-gateway, via scripts/local_stack.py."""
    env = {
        "GATEWAY_ALLOW_PRIVATE_URLS": "true",  # the photos come from 127.0.0.1
        "GATEWAY_WORKERS": str(workers),
        "GATEWAY_THREADS": str(threads),
        **(env or {}),
    }
    with start_gateway(
        tf_serving_host=model.grpc_target,
        port=port or free_port(),
        env=env,
        log=log,
        timeout=120,
    ) as running:
        yield Gateway("ours", running.url, running.process.pid)


@contextmanager
def seed_gateway(
    model: Running,
    *,
    model_name: str,
    size: int,
    workers: int,
    threads: int,
    log: Path,
    port: int | None = None,
) -> Iterator[Gateway]:
    """benchmarks/seed_gateway.py under gunicorn from .venv-seed, same process model as ours."""
    python = SEED_VENV / "bin" / "python"
    if not python.exists():
        raise BenchError(f"{python} not found; run `make bench-env` first")
    port = port or free_port()
    command = [
        str(python),
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--keep-alive",
        "5",
        "--timeout",
        "60",
        "--pythonpath",
        str(REPO),
        "benchmarks.seed_gateway:app",
    ]
    env = {
        "TF_SERVING_HOST": model.grpc_target,
        "SEED_MODEL_NAME": model_name,
        "SEED_INPUT_SIZE": str(size),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with _started(command, env, log) as process:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            return http_get(f"{url}/readyz")[0] == 200

        wait_until_ready(process, ready, "the seed gateway", 180, log)
        yield Gateway("seed", url, process.pid)


@contextmanager
def _started(
    command: list[str], env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update(env)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


class ReadyProbe:
    """Polls `url` every 10 ms from a thread and records when it first answers 200.

    local_stack's own wait polls every 200 ms, too coarse to time a cold start.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.ready_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> float:
        """Start polling; return the start time (perf_counter)."""
        started = time.perf_counter()
        self._thread.start()
        return started

    def _run(self) -> None:
        host, port = self.url.removeprefix("http://").split("/")[0].split(":")
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            try:
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    self.ready_at = time.perf_counter()
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.01)

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(timeout=5)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its live descendants."""
    total = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def worker_pids(pid: int) -> list[int]:
    """The gunicorn workers of a master process."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def rss_bytes(pid: int) -> int:
    """Resident set size of one process."""
    return int(psutil.Process(pid).memory_info().rss)


def tree_size(path: Path) -> int:
    """Apparent size of every file under `path` (hard links to uv's cache counted in full)."""
    total = 0
    for file in path.rglob("*"):
        try:
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
        except OSError:
            continue
    return total
