"""The model server: manager, predictor, optional batching, gRPC and REST, started together."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from devserver.batching import BatchScheduler
from devserver.grpc_api import create_grpc_server, host_port
from devserver.manager import ServableManager
from devserver.predict import Predictor, Runner, direct_runner
from devserver.rest_api import RestServer, create_app
from devserver.servable import Servable, load_servable
from devserver.settings import ModelConfig, Settings
from devserver.warmup import replay_warmup

log = logging.getLogger("devserver")


class ModelServer:
    """Everything `python -m devserver` runs, startable and stoppable in-process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scheduler = BatchScheduler(settings.batching) if settings.enable_batching else None
        runner: Runner = self.scheduler.run if self.scheduler is not None else direct_runner
        self.manager = ServableManager(
            settings.models,
            self._load,
            allow_labels_for_unavailable=settings.allow_version_labels_for_unavailable_models,
        )
        self.predictor = Predictor(self.manager, runner)
        self._grpc: grpc.Server | None = None
        self._rest: RestServer | None = None

    def _load(self, model: ModelConfig, version: int, path: Path) -> Servable:
        servable = load_servable(model.name, version, path)
        if self.settings.enable_model_warmup:
            replay_warmup(servable, self.predictor.predict_on)
        return servable

    def start(self) -> None:
        """Load the models (with warm-up), then open the gRPC and REST ports."""
        settings = self.settings
        if self.scheduler is not None:
            self.scheduler.start()
        self.manager.load_initial()
        if settings.grpc_port:
            self._grpc = create_grpc_server(
                self.predictor,
                self.manager,
                settings.grpc_bind_address,
                settings.grpc_port,
                settings.grpc_max_threads,
                settings.grpc_channel_arguments,
            )
            self._grpc.start()
        if settings.rest_api_port:
            app = create_app(self.manager, self.predictor, settings.monitoring_path)
            self._rest = RestServer(app, settings.rest_api_bind_address, settings.rest_api_port)
            self._rest.start()
        self.manager.poll_forever(settings.file_system_poll_wait_seconds)
        log.info("%s", self.ready_line())

    def ready_line(self) -> str:
        """The one startup line: what is AVAILABLE and where to reach it."""
        settings = self.settings
        models = ", ".join(f"{s.name} version {s.version}" for s in self.manager.available())
        grpc_at = host_port(settings.grpc_bind_address, settings.grpc_port) if self._grpc else "off"
        rest_at = (
            host_port(settings.rest_api_bind_address, settings.rest_api_port)
            if self._rest
            else "off"
        )
        batching = "off"
        if self.scheduler is not None:
            params = self.scheduler.params
            batching = (
                f"max_batch_size={params.max_batch_size} "
                f"batch_timeout_micros={params.batch_timeout_micros}"
            )
        return f"AVAILABLE: {models}; gRPC {grpc_at}; REST {rest_at}; batching {batching}"

    def stop(self, grace_seconds: float | None = None) -> None:
        """Stop polling, let in-flight RPCs finish within the grace period, close the ports."""
        grace = (
            self.settings.grpc_shutdown_grace_seconds if grace_seconds is None else grace_seconds
        )
        self.manager.stop()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
            self._grpc = None
        if self._rest is not None:
            self._rest.stop()
            self._rest = None
        if self.scheduler is not None:
            self.scheduler.stop()
