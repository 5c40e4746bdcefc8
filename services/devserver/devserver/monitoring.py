"""Prometheus metrics on the REST port, as `--monitoring_config_file` turns them on in TF Serving.

Only `:tensorflow:serving:request_count{model_name,status}` (tensorflow/serving
servables/tensorflow/util.cc `/tensorflow/serving/request_count`, named by
util/prometheus_exporter.cc, which turns every character outside [a-zA-Z0-9_] into ":").
Enough to see which replica served how many predictions; nothing else of TF Serving's set.
"""

from __future__ import annotations

import threading
from collections import Counter
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

REQUEST_COUNT = ":tensorflow:serving:request_count"
DEFAULT_PATH = "/monitoring/prometheus/metrics"  # TF Serving's kPrometheusPath


@cache
def _monitoring_config_class() -> Any:
    # tensorflow_serving/config/monitoring_config.proto: PrometheusConfig {bool enable = 1;
    # string path = 2;} and MonitoringConfig {PrometheusConfig prometheus_config = 1;}
    pool = descriptor_pool.DescriptorPool()
    proto = descriptor_pb2.FileDescriptorProto(
        name="devserver/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    field = descriptor_pb2.FieldDescriptorProto
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    config = proto.message_type.add(name="MonitoringConfig")
    config.field.add(
        name="prometheus_config",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=field.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    )


def parse_monitoring_config(text: str) -> str | None:
    """The metrics path a MonitoringConfig text proto turns on, or None when disabled.

    Raises text_format.ParseError for text that is not a MonitoringConfig.
    """
    config = text_format.Parse(text, _monitoring_config_class()())
    if not config.prometheus_config.enable:
        return None
    return str(config.prometheus_config.path) or DEFAULT_PATH


class RequestCounter:
    """Predict requests by model name and status code name, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(self, model_name: str, status: str) -> None:
        """Count one request that ended with `status` ('OK' or a gRPC code name)."""
        with self._lock:
            self._counts[(model_name, status)] += 1

    def exposition(self) -> str:
        """Prometheus text format."""
        with self._lock:
            counts = sorted(self._counts.items())
        lines = [f"# TYPE {REQUEST_COUNT} counter"]
        for (model, status), value in counts:
            model_label = model.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{REQUEST_COUNT}{{model_name="{model_label}",status="{status}"}} {value}')
        return "\n".join(lines) + "\n"
