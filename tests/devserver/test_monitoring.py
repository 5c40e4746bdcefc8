"""--monitoring_config_file: Prometheus request counts on the REST port, named like TF Serving."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import requests
from devserver.cli import build_parser, settings_from_args
from devserver.config_files import ConfigError
from devserver.server import ModelServer
from tensorflow_serving.apis import prediction_service_pb2_grpc

from clothing_tools.local_stack import free_port
from tests.devserver import tiny_model
from tests.devserver.support import MODEL_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_production_monitoring_config_serves_request_counts(model_base: Path) -> None:
    # the very file the model image ships (services/model/monitoring.config)
    args = build_parser().parse_args(
        [
            f"--port={free_port()}",
            f"--rest_api_port={free_port()}",
            f"--model_name={MODEL_NAME}",
            f"--model_base_path={model_base}",
            f"--monitoring_config_file={REPO_ROOT / 'services/model/monitoring.config'}",
        ]
    )
    settings = settings_from_args(args)
    assert settings.monitoring_path == "/monitoring/prometheus/metrics"
    server = ModelServer(settings)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = tiny_model.predict_request(tiny_model.random_images(1, seed=1))
            for _ in range(3):
                stub.Predict(request, timeout=30)
            request.model_spec.signature_name = "nope"
            with pytest.raises(grpc.RpcError):
                stub.Predict(request, timeout=30)
        rest = f"http://127.0.0.1:{settings.rest_api_port}"
        text = requests.get(f"{rest}/monitoring/prometheus/metrics", timeout=10).text
    finally:
        server.stop(0)
    assert f':tensorflow:serving:request_count{{model_name="{MODEL_NAME}",status="OK"}} 3' in text
    assert 'status="FAILED_PRECONDITION"} 1' in text
    assert "# TYPE :tensorflow:serving:request_count counter" in text


def test_disabled_or_broken_monitoring_config(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: false }\n")
    args = build_parser().parse_args(["--model_base_path=/m", f"--monitoring_config_file={config}"])
    assert settings_from_args(args).monitoring_path is None
    config.write_text("prometheus_config { enabled: true }\n")
    with pytest.raises(ConfigError, match=r"monitoring\.config"):
        settings_from_args(args)
