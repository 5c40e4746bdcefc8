"""The gateway's settings: read once from the environment into one typed, immutable object.

Each setting is declared once, as a field of `Settings` made by `setting(...)`: its type (the
annotation), default, environment variable, check and documentation. `from_env` reads and
checks them all; the README's "Gateway settings" table is `markdown_table()`
(`python -m gateway.settings` prints it; a test checks the README holds it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.contract import INTERPOLATIONS

MIB = 1024 * 1024
T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value the gateway cannot use."""


@dataclass(frozen=True)
class Check:
    """A condition a setting's value must meet, and what to say when it does not."""

    ok: Callable[[Any], bool]
    message: str


def at_least(minimum: float, shown: str | None = None) -> Check:
    """value >= minimum."""
    return Check(lambda value: value >= minimum, f"must be >= {shown or f'{minimum:g}'}")


def between(low: int, high: int) -> Check:
    """low <= value <= high."""
    return Check(lambda value: low <= value <= high, f"must be between {low} and {high}")


POSITIVE = Check(lambda value: value > 0, "must be > 0")
NOT_EMPTY = Check(bool, "must not be empty")
PERCENT = Check(lambda value: 0.0 <= value <= 100.0, "must be between 0 and 100")


@dataclass(frozen=True)
class Setting:
    """What `setting()` attaches to a field: everything but the type and the default."""

    env: str
    doc: str
    check: Check | None = None
    shown: str | None = None  # the default as the README shows it, when not the plain value


def setting(
    default: T, env: str, doc: str, check: Check | None = None, *, shown: str | None = None
) -> T:
    """A field of `Settings`: default, environment variable, check and one-line documentation."""
    field: T = dataclasses.field(
        default=default, metadata={"setting": Setting(env, doc, check, shown)}
    )
    return field


@dataclass(frozen=True)
class Settings:
    """Everything the gateway can be configured with."""

    # TF Serving
    tf_serving_host: str = setting(
        "localhost:8500",
        "TF_SERVING_HOST",
        "TF Serving gRPC target: `host:port`, or `dns:///name:port` to balance over every "
        "address of a headless Service",
        NOT_EMPTY,
    )
    model_name: str = setting(
        "clothing-model", "GATEWAY_MODEL_NAME", "name of the model in TF Serving", NOT_EMPTY
    )
    model_timeout: float = setting(
        10.0, "GATEWAY_MODEL_TIMEOUT_SECONDS", "deadline of every gRPC call", POSITIVE
    )
    model_retries: int = setting(
        3,
        "GATEWAY_MODEL_RETRIES",
        "gRPC attempts per call on UNAVAILABLE, with exponential backoff (1-5)",
        between(1, 5),
    )
    model_info_ttl: float = setting(
        60.0,
        "GATEWAY_MODEL_INFO_TTL_SECONDS",
        "how long the model's metadata and description are cached before being re-read",
        at_least(0),
    )
    grpc_max_message_bytes: int = setting(
        64 * MIB,
        "GATEWAY_GRPC_MAX_MESSAGE_BYTES",
        "largest gRPC message sent or received (a batch of images is one message)",
        at_least(4 * MIB, "4 MiB"),
        shown="67108864 (64 MiB)",
    )
    lb_policy: str = setting(
        "",
        "GATEWAY_GRPC_LB_POLICY",
        "`round_robin` or `pick_first`; empty means round_robin for `dns:///` targets",
        Check(
            lambda value: value in ("", "round_robin", "pick_first"),
            "must be round_robin or pick_first (or empty for automatic)",
        ),
    )
    retry_after: int = setting(
        5,
        "GATEWAY_RETRY_AFTER_SECONDS",
        "the `Retry-After` header sent with 503 model_unavailable",
        at_least(1),
    )
    # model versions: canary routing and shadow comparison (TF Serving labels stable/canary)
    canary_percent: float = setting(
        0.0,
        "GATEWAY_CANARY_PERCENT",
        "share of requests (0-100) sent to the model version labelled `canary`, the rest to "
        "`stable`; used only when TF Serving's model config has version labels",
        PERCENT,
    )
    shadow_percent: float = setting(
        0.0,
        "GATEWAY_SHADOW_PERCENT",
        "share of `stable` requests (0-100) also scored by `canary` in the background to "
        "measure agreement; the answer always comes from `stable`",
        PERCENT,
    )
    # fallbacks for a served model without the contract's `describe` signature
    fallback_labels: tuple[str, ...] = setting(
        (),
        "GATEWAY_LABELS",
        "comma-separated labels, used only when the model has no `describe` signature",
    )
    fallback_interpolation: str = setting(
        "nearest",
        "GATEWAY_RESIZE_INTERPOLATION",
        "Pillow resize filter, used only when the model has no `describe` signature",
        Check(lambda value: value in INTERPOLATIONS, f"must be one of {', '.join(INTERPOLATIONS)}"),
    )
    fallback_jpeg_draft: bool = setting(
        False,
        "GATEWAY_JPEG_DRAFT",
        "JPEG draft decoding, used only when the model has no `describe` signature",
    )
    # downloads and images
    allow_private_urls: bool = setting(
        False,
        "GATEWAY_ALLOW_PRIVATE_URLS",
        "allow URLs that resolve to loopback, private, link-local or other non-public "
        "addresses (only for local development)",
    )
    download_timeout: float = setting(
        10.0,
        "GATEWAY_DOWNLOAD_TIMEOUT_SECONDS",
        "deadline of one whole image download, redirects included",
        POSITIVE,
    )
    connect_timeout: float = setting(
        3.0,
        "GATEWAY_CONNECT_TIMEOUT_SECONDS",
        "TCP connect (plus TLS handshake) timeout of each download connection",
        POSITIVE,
    )
    read_timeout: float = setting(
        5.0,
        "GATEWAY_READ_TIMEOUT_SECONDS",
        "longest wait for the next bytes from an image host",
        POSITIVE,
    )
    max_redirects: int = setting(
        3, "GATEWAY_MAX_REDIRECTS", "redirects followed by a download", at_least(0)
    )
    download_keepalive: float = setting(
        4.0,
        "GATEWAY_DOWNLOAD_KEEPALIVE_SECONDS",
        "how long a connection to an image host that finished a download cleanly is kept for "
        "the next download from the same checked address and host name (0 = close each)",
        at_least(0),
    )
    max_image_bytes: int = setting(
        10 * MIB,
        "GATEWAY_MAX_IMAGE_BYTES",
        "largest image accepted, downloaded or uploaded (413 image_too_large)",
        at_least(1024),
        shown="10485760 (10 MiB)",
    )
    max_image_pixels: int = setting(
        40_000_000,
        "GATEWAY_MAX_IMAGE_PIXELS",
        "largest width x height accepted, checked before decoding (413 image_too_many_pixels)",
        at_least(1024),
    )
    max_body_bytes: int = setting(
        11 * MIB,
        "GATEWAY_MAX_BODY_BYTES",
        "largest request body (413 payload_too_large); at least GATEWAY_MAX_IMAGE_BYTES",
        shown="11534336 (11 MiB)",
    )
    batch_max_urls: int = setting(
        32, "GATEWAY_BATCH_MAX_URLS", "most URLs in one `/predict/batch` request", between(1, 1024)
    )
    download_concurrency: int = setting(
        8,
        "GATEWAY_DOWNLOAD_CONCURRENCY",
        "concurrent downloads per worker process for batches",
        between(1, 256),
    )
    # access
    api_keys_file: str = setting(
        "",
        "GATEWAY_API_KEYS_FILE",
        "file of API keys, one per line (blank lines and `#` comments ignored); when set, "
        "`/predict` and `/predict/batch` need `Authorization: Bearer <key>`; empty: no keys",
    )
    # decode memory budget (gateway.budget)
    memory_limit_bytes: int = setting(
        0,
        "GATEWAY_MEMORY_LIMIT_BYTES",
        "the container's memory limit (the Pulumi program passes the pod's); 0: read the "
        "cgroup's (v2 memory.max, v1 memory.limit_in_bytes), else 768 MiB",
        at_least(0),
    )
    worker_baseline_bytes: int = setting(
        112 * MIB,
        "GATEWAY_WORKER_BASELINE_BYTES",
        "memory of a worker besides image decoding (86 MiB measured under load); each worker "
        "may decode (limit - 48 MiB master) / workers - this",
        at_least(0),
        shown="117440512 (112 MiB)",
    )
    decode_wait: float = setting(
        5.0,
        "GATEWAY_DECODE_WAIT_SECONDS",
        "longest wait for room in the worker's decode memory budget (then 503 decode_busy)",
        at_least(0),
    )
    # process
    bind: str = setting(
        "0.0.0.0:9696",
        "GATEWAY_BIND",
        "gunicorn listen address",
        Check(lambda value: ":" in value, "must be HOST:PORT"),
    )
    metrics_bind: str = setting(
        "0.0.0.0:9697",
        "GATEWAY_METRICS_BIND",
        "listen address of Prometheus `/metrics` (all workers summed), served by the gunicorn "
        "master; never on GATEWAY_BIND, so keep this port out of public Services",
        Check(lambda value: ":" in value, "must be HOST:PORT"),
    )
    workers: int = setting(2, "GATEWAY_WORKERS", "gunicorn worker processes", at_least(1))
    # A request holds its thread while it downloads (100-1000 ms on real hosts) and costs
    # ~3.5 ms of CPU: 2 x 160 threads keep a 1-CPU pod CPU-bound up to 1 s downloads (~285
    # req/s x 1.05 s = 300 in flight), so the CPU-based HPA sees the load (docs/scaling.md).
    threads: int = setting(
        160,
        "GATEWAY_THREADS",
        "threads per worker (gthread worker class); sized so CPU, not threads, limits a pod "
        "at downloads up to 1 s (README Scaling)",
        at_least(1),
    )
    worker_timeout: int = setting(
        60,
        "GATEWAY_WORKER_TIMEOUT_SECONDS",
        "gunicorn kills a worker silent for this long",
        at_least(1),
    )
    graceful_timeout: int = setting(
        30,
        "GATEWAY_GRACEFUL_TIMEOUT_SECONDS",
        "on SIGTERM, time given to requests in flight before workers are killed",
        at_least(0),
    )
    max_requests: int = setting(
        0,
        "GATEWAY_MAX_REQUESTS",
        "recycle a worker after this many requests (0: never)",
        at_least(0),
    )
    log_level: str = setting(
        "INFO",
        "GATEWAY_LOG_LEVEL",
        "DEBUG, INFO, WARNING or ERROR",
        Check(
            lambda value: value.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "must be DEBUG, INFO, WARNING or ERROR",
        ),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from the environment (or the given mapping); unset means default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            variable = declaration(field.name).env
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            values[field.name] = _parse(variable, raw.strip(), field)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check every value with its declared check, then the combinations; name the variable."""
        for field in dataclasses.fields(self):
            declared = declaration(field.name)
            if declared.check and not declared.check.ok(getattr(self, field.name)):
                raise SettingsError(f"{declared.env}: {declared.check.message}")
        if self.max_body_bytes < self.max_image_bytes:
            raise SettingsError(
                f"{declaration('max_body_bytes').env}: must be >= "
                f"{declaration('max_image_bytes').env} so an upload of the largest image fits"
            )
        metrics_port, port = self.metrics_bind.rpartition(":")[2], self.bind.rpartition(":")[2]
        if metrics_port == port and port != "0":  # port 0: the OS picks two different ports
            raise SettingsError(
                f"{env_name('metrics_bind')}: must use another port than {env_name('bind')} "
                f"(metrics stay off the public port)"
            )

    @property
    def load_balancing(self) -> str:
        """The gRPC load-balancing policy: round_robin for `dns:///` targets unless overridden."""
        if self.lb_policy:
            return self.lb_policy
        return "round_robin" if self.tf_serving_host.startswith("dns:") else "pick_first"


def declaration(name: str) -> Setting:
    """The declaration of the setting `name` (its variable, check and documentation)."""
    declared: Setting = Settings.__dataclass_fields__[name].metadata["setting"]
    return declared


def env_name(name: str) -> str:
    """The environment variable of the setting `name`."""
    return declaration(name).env


def markdown_table() -> str:
    """The README's table of settings: variable, default and meaning, in declaration order."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for field in dataclasses.fields(Settings):
        declared = declaration(field.name)
        rows.append(f"| `{declared.env}` | {_shown_default(field, declared)} | {declared.doc} |")
    return "\n".join(rows) + "\n"


def _shown_default(field: dataclasses.Field[Any], declared: Setting) -> str:
    value = field.default
    if declared.shown is not None:
        return f"`{declared.shown}`"
    if value in ("", ()):
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(variable: str, raw: str, field: dataclasses.Field[Any]) -> Any:
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


if __name__ == "__main__":
    print(markdown_table(), end="")
