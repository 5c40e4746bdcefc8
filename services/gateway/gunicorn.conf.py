"""gunicorn settings for the gateway: `gunicorn -c gunicorn.conf.py gateway.wsgi:app`.

Values come from the same typed settings as the app (GATEWAY_BIND, GATEWAY_WORKERS, ...).
gthread workers: downloads are slow I/O and grpc is not safe under gevent without its gevent
integration, so each worker runs a pool of real threads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

# No path set-up: gunicorn puts its working directory (`--chdir`, default the current one:
# /app in the image, services/gateway locally) on sys.path before it reads this file
# (gunicorn/app/base.py, Application.load_config -> chdir); the main .venv installs `gateway`.
from gateway.apikeys import load_api_keys
from gateway.settings import Settings, SettingsError

try:
    settings = Settings.from_env()
    load_api_keys(settings)  # a missing or empty keys file stops the master, not each worker
except SettingsError as exc:
    # one clear line and exit code 1 instead of gunicorn's "Failed to read config file" traceback
    raise SystemExit(f"gateway: {exc}") from None

# prometheus_client decides on multiprocess mode when it is first imported, so the directory
# must be in the environment before any worker imports the app.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")

bind = [settings.bind]
worker_class = "gthread"
workers = settings.workers
threads = settings.threads
timeout = settings.worker_timeout
graceful_timeout = settings.graceful_timeout
max_requests = settings.max_requests
max_requests_jitter = max(0, settings.max_requests // 10)
keepalive = 5
control_socket_disable = True  # no runtime-management socket in $HOME (gunicorn >= 25.1)
preload_app = False  # each worker builds its app (and its gRPC channel) after the fork
accesslog = None  # the app logs one JSON line per request
errorlog = "-"
loglevel = settings.log_level.lower()
# gunicorn's own lines (start, workers, shutdown) as JSON too, like the app's
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "gateway.logs.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "json",
                          "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "gunicorn.error": {"level": settings.log_level.upper(), "handlers": ["error_console"],
                           "propagate": False, "qualname": "gunicorn.error"},
    },
}  # fmt: skip
if Path("/dev/shm").is_dir():  # noqa: S108 - gunicorn's heartbeat files, not data
    worker_tmp_dir = "/dev/shm"  # noqa: S108


def on_starting(server: Any) -> None:
    """Start with an empty metrics directory (values of a previous run would be added)."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)


# The master's metrics listener; workers inherit its socket at fork and close their copy.
_metrics_server: list[Any] = []


def when_ready(server: Any) -> None:
    """Serve /metrics (every worker's files summed) on GATEWAY_METRICS_BIND from the master.

    The master outlives every worker, so a scrape always sees all of them; the public port
    (GATEWAY_BIND) has no /metrics route at all. A listener that cannot bind stops the start.
    """
    from gateway.metrics import scrape_registry, serve_metrics

    # A thread in the master, which later forks workers: safe here because the scrape thread
    # only reads the metric files (no lock a worker needs) and gunicorn (>= 25) runs its own
    # control-socket thread in the master the same way (gunicorn/ctl/server.py). The chosen way
    # is prometheus_client's documented start_http_server with a MultiProcessCollector registry.
    try:
        metrics_server = serve_metrics(settings.metrics_bind, scrape_registry())
    except OSError as exc:
        raise SystemExit(
            f"gateway: GATEWAY_METRICS_BIND={settings.metrics_bind}: cannot listen: {exc}"
        ) from None
    _metrics_server.append(metrics_server)
    host, port = metrics_server.server_address[:2]
    server.log.info("Metrics at: http://%s:%s/metrics", host, port)


def post_fork(server: Any, worker: Any) -> None:
    """Close the worker's inherited copy of the master's metrics socket (it never serves it);
    make freed image memory go back to the OS at once (see gateway.budget)."""
    from gateway.budget import return_freed_images_to_os

    for metrics_server in _metrics_server:
        metrics_server.socket.close()
    return_freed_images_to_os()


def child_exit(server: Any, worker: Any) -> None:
    """Tell prometheus_client a worker is gone so its live gauges are dropped."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
