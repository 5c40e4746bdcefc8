"""The gateway's settings: read once from the environment into one typed, immutable object.

Every variable is documented in the README's "Gateway settings" section; `SETTINGS_DOC` below is
the source of that table (a test checks they agree).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from gateway.contract import INTERPOLATIONS

MIB = 1024 * 1024


class SettingsError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything the gateway can be configured with."""

    # TF Serving
    tf_serving_host: str = "localhost:8500"
    model_name: str = "clothing-model"
    model_timeout: float = 10.0
    model_retries: int = 3
    model_info_ttl: float = 60.0
    grpc_max_message_bytes: int = 64 * MIB
    lb_policy: str = ""
    retry_after: int = 5
    # fallbacks for a served model without the contract's `describe` signature
    fallback_labels: tuple[str, ...] = ()
    fallback_interpolation: str = "nearest"
    fallback_jpeg_draft: bool = False
    # downloads and images
    allow_private_urls: bool = False
    download_timeout: float = 10.0
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    max_redirects: int = 3
    max_image_bytes: int = 10 * MIB
    max_image_pixels: int = 40_000_000
    max_body_bytes: int = 11 * MIB
    batch_max_urls: int = 32
    download_concurrency: int = 8
    # process
    bind: str = "0.0.0.0:9696"
    workers: int = 2
    threads: int = 8
    worker_timeout: int = 60
    graceful_timeout: int = 30
    max_requests: int = 0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from the environment (or the given mapping); unset means default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            variable = ENV_NAMES[field.name]
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            values[field.name] = _parse(variable, raw.strip(), cls.__dataclass_fields__[field.name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse combinations that cannot work, naming the variable."""

        def need(ok: bool, field: str, what: str) -> None:
            if not ok:
                raise SettingsError(f"{ENV_NAMES[field]}: {what}")

        need(bool(self.tf_serving_host), "tf_serving_host", "must not be empty")
        need(bool(self.model_name), "model_name", "must not be empty")
        for name in ("model_timeout", "download_timeout", "connect_timeout", "read_timeout"):
            need(getattr(self, name) > 0, name, "must be > 0")
        need(1 <= self.model_retries <= 5, "model_retries", "must be between 1 and 5")
        need(self.model_info_ttl >= 0, "model_info_ttl", "must be >= 0")
        need(self.grpc_max_message_bytes >= 4 * MIB, "grpc_max_message_bytes", "must be >= 4 MiB")
        need(
            self.lb_policy in ("", "round_robin", "pick_first"),
            "lb_policy",
            "must be round_robin or pick_first (or empty for automatic)",
        )
        need(self.retry_after >= 1, "retry_after", "must be >= 1")
        need(
            self.fallback_interpolation in INTERPOLATIONS,
            "fallback_interpolation",
            f"must be one of {', '.join(INTERPOLATIONS)}",
        )
        need(self.max_redirects >= 0, "max_redirects", "must be >= 0")
        need(self.max_image_bytes >= 1024, "max_image_bytes", "must be >= 1024")
        need(self.max_image_pixels >= 1024, "max_image_pixels", "must be >= 1024")
        need(
            self.max_body_bytes >= self.max_image_bytes,
            "max_body_bytes",
            f"must be >= {ENV_NAMES['max_image_bytes']} so an upload of the largest image fits",
        )
        need(1 <= self.batch_max_urls <= 1024, "batch_max_urls", "must be between 1 and 1024")
        need(
            1 <= self.download_concurrency <= 256,
            "download_concurrency",
            "must be between 1 and 256",
        )
        need(":" in self.bind, "bind", "must be HOST:PORT")
        need(self.workers >= 1, "workers", "must be >= 1")
        need(self.threads >= 1, "threads", "must be >= 1")
        need(self.worker_timeout >= 1, "worker_timeout", "must be >= 1")
        need(self.graceful_timeout >= 0, "graceful_timeout", "must be >= 0")
        need(self.max_requests >= 0, "max_requests", "must be >= 0")
        need(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "log_level",
            "must be DEBUG, INFO, WARNING or ERROR",
        )

    @property
    def load_balancing(self) -> str:
        """The gRPC load-balancing policy: round_robin for `dns:///` targets unless overridden."""
        if self.lb_policy:
            return self.lb_policy
        return "round_robin" if self.tf_serving_host.startswith("dns:") else "pick_first"


# field -> (environment variable, description for the README)
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "tf_serving_host": (
        "TF_SERVING_HOST",
        "TF Serving gRPC target: `host:port`, or `dns:///name:port` to balance over every "
        "address of a headless Service",
    ),
    "model_name": ("GATEWAY_MODEL_NAME", "name of the model in TF Serving"),
    "model_timeout": ("GATEWAY_MODEL_TIMEOUT_SECONDS", "deadline of every gRPC call"),
    "model_retries": (
        "GATEWAY_MODEL_RETRIES",
        "gRPC attempts per call on UNAVAILABLE, with exponential backoff (1-5)",
    ),
    "model_info_ttl": (
        "GATEWAY_MODEL_INFO_TTL_SECONDS",
        "how long the model's metadata and description are cached before being re-read",
    ),
    "grpc_max_message_bytes": (
        "GATEWAY_GRPC_MAX_MESSAGE_BYTES",
        "largest gRPC message sent or received (a batch of images is one message)",
    ),
    "lb_policy": (
        "GATEWAY_GRPC_LB_POLICY",
        "`round_robin` or `pick_first`; empty means round_robin for `dns:///` targets",
    ),
    "retry_after": (
        "GATEWAY_RETRY_AFTER_SECONDS",
        "the `Retry-After` header sent with 503 model_unavailable",
    ),
    "fallback_labels": (
        "GATEWAY_LABELS",
        "comma-separated labels, used only when the model has no `describe` signature",
    ),
    "fallback_interpolation": (
        "GATEWAY_RESIZE_INTERPOLATION",
        "Pillow resize filter, used only when the model has no `describe` signature",
    ),
    "fallback_jpeg_draft": (
        "GATEWAY_JPEG_DRAFT",
        "JPEG draft decoding, used only when the model has no `describe` signature",
    ),
    "allow_private_urls": (
        "GATEWAY_ALLOW_PRIVATE_URLS",
        "allow URLs that resolve to loopback, private, link-local or other non-public "
        "addresses (only for local development)",
    ),
    "download_timeout": (
        "GATEWAY_DOWNLOAD_TIMEOUT_SECONDS",
        "deadline of one whole image download, redirects included",
    ),
    "connect_timeout": (
        "GATEWAY_CONNECT_TIMEOUT_SECONDS",
        "TCP connect (plus TLS handshake) timeout of each download connection",
    ),
    "read_timeout": (
        "GATEWAY_READ_TIMEOUT_SECONDS",
        "longest wait for the next bytes from an image host",
    ),
    "max_redirects": ("GATEWAY_MAX_REDIRECTS", "redirects followed by a download"),
    "max_image_bytes": (
        "GATEWAY_MAX_IMAGE_BYTES",
        "largest image accepted, downloaded or uploaded (413 image_too_large)",
    ),
    "max_image_pixels": (
        "GATEWAY_MAX_IMAGE_PIXELS",
        "largest width x height accepted, checked before decoding (413 image_too_many_pixels)",
    ),
    "max_body_bytes": (
        "GATEWAY_MAX_BODY_BYTES",
        "largest request body (413 payload_too_large); at least GATEWAY_MAX_IMAGE_BYTES",
    ),
    "batch_max_urls": ("GATEWAY_BATCH_MAX_URLS", "most URLs in one `/predict/batch` request"),
    "download_concurrency": (
        "GATEWAY_DOWNLOAD_CONCURRENCY",
        "concurrent downloads per worker process for batches",
    ),
    "bind": ("GATEWAY_BIND", "gunicorn listen address"),
    "workers": ("GATEWAY_WORKERS", "gunicorn worker processes"),
    "threads": ("GATEWAY_THREADS", "threads per worker (gthread worker class)"),
    "worker_timeout": (
        "GATEWAY_WORKER_TIMEOUT_SECONDS",
        "gunicorn kills a worker silent for this long",
    ),
    "graceful_timeout": (
        "GATEWAY_GRACEFUL_TIMEOUT_SECONDS",
        "on SIGTERM, time given to requests in flight before workers are killed",
    ),
    "max_requests": (
        "GATEWAY_MAX_REQUESTS",
        "recycle a worker after this many requests (0: never)",
    ),
    "log_level": ("GATEWAY_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
}
ENV_NAMES: dict[str, str] = {name: doc[0] for name, doc in SETTINGS_DOC.items()}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(variable: str, raw: str, field: Any) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "bool":
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError("expected true or false")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("tuple"):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{variable}={raw!r}: {exc}") from None
