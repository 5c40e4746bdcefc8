"""The HTTP API: Flask application factory, routes, the single error handler, request logs."""

from __future__ import annotations

import functools
import io
import json
import logging
import re
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from gateway import errors
from gateway.apikeys import load_api_keys
from gateway.fetch import FetchPolicy, fetch_image
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.netguard import MAX_URL_LENGTH
from gateway.predictor import Predictor
from gateway.request_ids import new_request_id
from gateway.service import Classifier, Fetcher, Stopwatch, model_json
from gateway.settings import Settings

log = logging.getLogger("gateway.app")
access_log = logging.getLogger("gateway.access")

STATIC_DIR = Path(__file__).resolve().parent / "static"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
JSON_TYPES = {"", "application/json"}
# The page is three static files with no inline script or style, so it runs under a strict
# policy: scripts, styles and API calls only from the gateway itself; images also from the
# URL the user types (the preview), a picked file (blob:) and the empty icon (data:); never
# framed (clickjacking), no plugins, no <base> rewriting. Sent with every response.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
    "img-src 'self' data: blob: http: https:", "object-src 'none'", "base-uri 'none'",
    "form-action 'self'", "frame-ancestors 'none'",
])  # fmt: skip
HTTP_CODES = {
    400: errors.BadRequest,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def default_fetcher(settings: Settings) -> Fetcher:
    """The SSRF-safe downloader configured from the settings."""
    policy = FetchPolicy(
        max_bytes=settings.max_image_bytes,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        total_timeout=settings.download_timeout,
        max_redirects=settings.max_redirects,
        allow_private=settings.allow_private_urls,
        keep_alive_seconds=settings.download_keepalive,
    )
    return lambda url, hold: fetch_image(url, policy, hold=hold)


def create_app(
    settings: Settings | None = None,
    predictor: Predictor | None = None,
    fetcher: Fetcher | None = None,
    metrics: Metrics | None = None,
) -> Flask:
    """Build the gateway app; the predictor and fetcher default to TF Serving and the web."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    api_keys = load_api_keys(settings)
    if predictor is None:
        from gateway.tfserving import TFServingPredictor

        predictor = TFServingPredictor(settings)
    metrics = metrics or Metrics()  # given by tests that scrape it; gunicorn reads the files
    classifier = Classifier(settings, predictor, fetcher or default_fetcher(settings), metrics)
    openapi = json.loads(resources.files("gateway").joinpath("openapi.json").read_text("utf-8"))

    # Parsing JSON costs ~20x its size in Python objects (an 11 MiB body of `[]`s: 246 MiB),
    # so a JSON body may only be as large as the largest real one: a full batch of the
    # longest URLs, every character escaped (\uXXXX), plus room for the rest.
    json_limit = min(
        settings.max_body_bytes, 16 * 1024 + settings.batch_max_urls * MAX_URL_LENGTH * 6
    )
    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

    def reject(exc: errors.GatewayError) -> None:
        metrics.rejections.labels(exc.code, getattr(exc, "reason", exc.code)).inc()

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        header = request.headers.get("X-Request-ID", "")
        g.request_id = header if REQUEST_ID.match(header) else new_request_id()
        g.error_code = None
        g.items = None
        g.stopwatch = Stopwatch()

    @app.after_request
    def finish_request(response: Response) -> Response:
        request_id = g.get("request_id") or new_request_id()
        response.headers["X-Request-ID"] = request_id
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")  # for browsers without CSP 2
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        response.headers["Server-Timing"] = server_timing(g.get("stopwatch"), seconds)
        status = str(response.status_code)
        metrics.requests.labels(route, request.method, status).inc()
        metrics.request_seconds.labels(route, request.method, status).observe(seconds)
        if route not in ("/healthz", "/readyz"):
            access_log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "request_id": request_id,
                    "method": request.method,
                    "path": request.path,
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 1),
                    "error_code": g.get("error_code"),
                    "items": g.get("items"),
                    "remote_addr": request.remote_addr,
                },
            )
        return response

    @app.errorhandler(errors.GatewayError)
    def gateway_error(exc: errors.GatewayError) -> Response:
        g.error_code = exc.code
        reject(exc)
        response = jsonify(exc.to_dict())
        response.status_code = exc.status
        response.headers.update(exc.headers())
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        kind = HTTP_CODES.get(status, errors.GatewayError)
        message = exc.description or exc.name
        if status == 413:
            message = f"the request body is over the limit of {settings.max_body_bytes} bytes"
        elif status == 404:
            message = f"no such path: {request.path}; the API is described at /openapi.json"
        error = kind(message)
        error.status = status
        response = gateway_error(error)
        if status == 405:
            response.headers["Allow"] = ", ".join(sorted(getattr(exc, "valid_methods", []) or []))
        return response

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return gateway_error(errors.GatewayError("internal error; see the gateway's logs"))

    def keyed(view: Callable[[], Response]) -> Callable[[], Response]:
        """The view behind the API key check (before the body is read), when keys are on."""
        if api_keys is None:
            return view

        @functools.wraps(view)
        def checked() -> Response:
            api_keys.check(request.headers)
            return view()

        return checked

    @app.post("/predict")
    @keyed
    def predict() -> Response:
        if request.mimetype == "multipart/form-data":
            # werkzeug spools a part over 500 KB to the pod's /tmp as it parses: the body's
            # size is reserved from the decode budget first, so concurrent uploads are bounded
            # on disk (the Pulumi program sizes /tmp from the same limit) as well as in memory.
            body_bytes = request.content_length or settings.max_body_bytes
            with classifier.budget.reserve(body_bytes) as held:
                upload = request.files.get("file")
                if upload is None:
                    raise errors.BadRequest("the multipart body needs an image in the field 'file'")
                size = upload.stream.seek(0, io.SEEK_END)
                upload.stream.seek(0)
                if size > settings.max_image_bytes:
                    raise errors.ImageTooLarge(
                        f"the image is {size} bytes; the limit is {settings.max_image_bytes}"
                    )
                answer = classifier.classify_upload(
                    upload.stream, size, g.request_id, g.stopwatch, held=held
                )
            return jsonify(answer)
        body = json_body()
        url = body.get("url")
        if url is None:
            raise errors.BadRequest('the body needs a "url": {"url": "https://..."}')
        if not isinstance(url, str):
            raise errors.InvalidURL('"url" must be a string')
        return jsonify(classifier.classify_url(url, g.request_id, g.stopwatch))

    @app.post("/predict/batch")
    @keyed
    def predict_batch() -> Response:
        body = json_body()
        urls = body.get("urls")
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise errors.BadRequest('the body needs "urls": a non-empty list of URL strings')
        if len(urls) > settings.batch_max_urls:
            raise errors.TooManyURLs(
                f"{len(urls)} URLs; at most {settings.batch_max_urls} per batch"
            )
        g.items = len(urls)
        return jsonify(classifier.classify_batch(urls, g.request_id, reject, g.stopwatch))

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        # Ready once the model has been described; later TF Serving blips (even a hung server)
        # keep the cached description, never block the probe, and fail single requests with
        # 503 instead of taking every replica out of the Service at once.
        info = classifier.predictor.model_info(g.request_id, allow_stale=True)
        return jsonify({"status": "ready", "model": model_json(info)})

    @app.get("/api/config")
    def client_config() -> Response:
        # what the web page needs to know before its first request; nothing secret
        return jsonify({"api_key_required": api_keys is not None})

    @app.get("/openapi.json")
    def openapi_document() -> Response:
        return jsonify(openapi)

    @app.get("/")
    def index() -> Response:
        if not (STATIC_DIR / "index.html").is_file():
            raise errors.NotFound("no page here; the API is described at /openapi.json")
        return send_from_directory(STATIC_DIR, "index.html")

    def json_body() -> dict[str, Any]:
        if request.mimetype not in JSON_TYPES:
            raise errors.UnsupportedMediaType(
                f"send application/json (or multipart/form-data with a 'file' to /predict), "
                f"not {request.mimetype}"
            )
        if request.content_length is not None and request.content_length > json_limit:
            raise errors.PayloadTooLarge(
                f"a JSON body is at most {json_limit} bytes (the largest batch of URLs)"
            )
        raw = read_body(json_limit)
        try:
            body = json.loads(raw)
        except RecursionError:
            raise errors.InvalidJSON("the body is not valid JSON: nested too deeply") from None
        except ValueError as exc:  # also bad UTF-8 and integers too long to convert
            raise errors.InvalidJSON(f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise errors.InvalidJSON("the body must be a JSON object")
        return body

    return app


def server_timing(stopwatch: Stopwatch | None, total: float) -> str:
    """The Server-Timing header: each stage the request went through, then the total (ms)."""
    stages = stopwatch.stages.items() if stopwatch is not None else ()
    parts = [f"{name};dur={seconds * 1000:.1f}" for name, seconds in stages]
    return ", ".join([*parts, f"total;dur={total * 1000:.1f}"])


def read_body(limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes even without a Content-Length."""
    if request.content_length is not None:
        return request.get_data(cache=False)  # werkzeug refuses a declared length over the limit
    # A chunked body: werkzeug stops reading at the limit without saying so, so count here.
    chunks: list[bytes] = []
    total = 0
    while chunk := request.stream.read(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise errors.PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
