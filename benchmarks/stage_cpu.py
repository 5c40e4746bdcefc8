"""Run a gateway under gunicorn with per-stage CPU counters in every worker (profiling only).

    python benchmarks/stage_cpu.py ours|seed OUT_DIR [gunicorn arguments ...]

Run with the gateway's own interpreter (.venv-gateway for ours, from services/gateway;
.venv-seed for the seed-style gateway). After each worker has loaded the app, the functions of
each stage are wrapped with a thread-CPU clock (`time.thread_time`, exclusive of nested
stages), and a thread writes the worker's totals to OUT_DIR/<pid>.json twice a second:
per stage, per group of threads (request threads, gunicorn's main loop, everything else such
as gRPC's core threads) and the whole process. benchmarks/stages.py reads them around a wrk run.
Nothing here is imported by the gateway itself.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_local = threading.local()
_totals: dict[str, float] = {}
_lock = threading.Lock()
_request_threads: set[int] = set()


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, adding its thread CPU (minus nested timed calls) to stage `name`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stack: list[float] = _local.__dict__.setdefault("stack", [])
        started = time.thread_time()
        stack.append(0.0)  # CPU of nested stages
        try:
            return function(*args, **kwargs)
        finally:
            nested = stack.pop()
            spent = time.thread_time() - started
            if stack:
                stack[-1] += spent
            with _lock:
                _totals[name] = _totals.get(name, 0.0) + spent - nested

    return wrapper


def _thread_cpu(thread: threading.Thread) -> float:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident or 0))
    except (OSError, ValueError):
        return 0.0


def _snapshot(path: Path) -> None:
    groups = {"request threads": 0.0, "gunicorn main loop": 0.0, "other Python threads": 0.0}
    for thread in threading.enumerate():
        if thread.ident in _request_threads:
            groups["request threads"] += _thread_cpu(thread)
        elif thread is threading.main_thread():
            groups["gunicorn main loop"] += _thread_cpu(thread)
        elif thread.name != "stage-cpu-writer":
            groups["other Python threads"] += _thread_cpu(thread)
    with _lock:
        stages = dict(_totals)
    process = time.process_time()
    data = {"pid": os.getpid(), "stages": stages, "threads": groups, "process": process}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def _writer(out: Path) -> None:
    path = out / f"{os.getpid()}.json"
    while True:
        _snapshot(path)
        time.sleep(0.5)


def _wrap_app(worker: Any) -> None:
    app = worker.wsgi
    inner = timed("HTTP framework (Flask/werkzeug, routing, JSON, headers)", app)

    def counted(environ: Any, start_response: Any) -> Any:
        _request_threads.add(threading.get_ident())
        return inner(environ, start_response)

    worker.wsgi = counted


def install_ours(worker: Any) -> None:
    """Wrap our gateway's stages (download, decode/resize, request build, gRPC, metrics, logs)."""
    import logging

    import prometheus_client.metrics as pm
    from gateway.service import Classifier
    from gateway.tfserving import TFServingPredictor

    # Class attributes, so whatever instance the app built is covered; the download stage is
    # Classifier.download less the metrics it records (nested stages are subtracted).
    Classifier.download = timed("download", Classifier.download)  # type: ignore[method-assign]
    Classifier.prepare = timed("decode/resize", Classifier.prepare)  # type: ignore[method-assign]
    TFServingPredictor.predict = timed(  # type: ignore[method-assign]
        "request build + answer parse", TFServingPredictor.predict
    )
    # every RPC goes through _raw_call (Predict directly, the others through _call)
    TFServingPredictor._raw_call = timed("gRPC call", TFServingPredictor._raw_call)  # type: ignore[method-assign]
    for cls, method in ((pm.Histogram, "observe"), (pm.Counter, "inc")):
        setattr(cls, method, timed("metrics", getattr(cls, method)))
    pm.MetricWrapperBase.labels = timed("metrics", pm.MetricWrapperBase.labels)  # type: ignore[method-assign]
    logging.Handler.handle = timed("logging", logging.Handler.handle)  # type: ignore[method-assign]
    try:  # the gateway's own handler skips Handler.handle
        from gateway.logs import LineHandler

        LineHandler.handle = timed("logging", LineHandler.handle)  # type: ignore[method-assign]
    except ImportError:
        pass
    _wrap_app(worker)


def install_seed(worker: Any) -> None:
    """Wrap the seed-style gateway's stages (download, decode/resize/float, build, gRPC)."""
    import keras_image_helper.base as base

    import benchmarks.seed_gateway as seed

    base.download_image = timed("download", base.download_image)
    seed.preprocessor.convert_to_tensor = timed(
        "decode/resize", seed.preprocessor.convert_to_tensor
    )
    seed.prepare_request = timed("request build + answer parse", seed.prepare_request)
    seed.prepare_response = timed("request build + answer parse", seed.prepare_response)
    seed.stub.Predict = timed("gRPC call", seed.stub.Predict)
    _wrap_app(worker)


def main() -> None:
    """Start gunicorn with the counters installed after each worker loads the app."""
    from gunicorn.app.wsgiapp import WSGIApplication

    which, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    install = install_ours if which == "ours" else install_seed

    def post_worker_init(worker: Any) -> None:
        install(worker)
        threading.Thread(target=_writer, args=(out,), name="stage-cpu-writer", daemon=True).start()

    class Staged(WSGIApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            super().load_config()
            self.cfg.set("post_worker_init", post_worker_init)

    sys.argv = ["gunicorn", *sys.argv[3:]]
    Staged("%(prog)s [OPTIONS] [APP_MODULE]").run()


if __name__ == "__main__":
    main()
