"""One error base class carrying its HTTP status and machine code; one subclass per condition.

The app maps every `GatewayError` to `{"error": {"code": ..., "message": ...}}` in a single
handler; nothing else in the gateway builds error responses.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, dict[str, str]]:
        """The JSON error body."""
        return {"error": {"code": self.code, "message": self.message}}

    def headers(self) -> dict[str, str]:
        """Response headers this error adds (Retry-After when it has one)."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


# 400: the request itself is wrong
class BadRequest(GatewayError):
    status, code = 400, "bad_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidURL(BadRequest):
    code = "invalid_url"


class ForbiddenURL(BadRequest):
    code = "forbidden_url"


class TooManyURLs(BadRequest):
    code = "too_many_urls"


# 401 / 403: no API key, or one the gateway does not know (only when keys are configured)
class ApiKeyRequired(GatewayError):
    status, code = 401, "api_key_required"

    def headers(self) -> dict[str, str]:
        """The challenge RFC 9110 requires with a 401: the Bearer scheme."""
        return {**super().headers(), "WWW-Authenticate": 'Bearer realm="clothing-gateway"'}


class ApiKeyInvalid(GatewayError):
    status, code = 403, "api_key_invalid"


# 404 / 405 / 415: the route, method or content type is wrong
class NotFound(GatewayError):
    status, code = 404, "not_found"


class MethodNotAllowed(GatewayError):
    status, code = 405, "method_not_allowed"


class UnsupportedMediaType(GatewayError):
    status, code = 415, "unsupported_media_type"


# 413: too big
class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class TooManyPixels(PayloadTooLarge):
    code = "image_too_many_pixels"


class ImageTooCostly(PayloadTooLarge):
    """Decoding would need more memory than a worker ever gives one image."""

    code = "image_too_costly"


# 415 / 422: not an image we can use
class UnsupportedImageFormat(GatewayError):
    status, code = 415, "unsupported_image_format"


class UndecodableImage(GatewayError):
    status, code = 422, "undecodable_image"


# 502 / 504: the image host failed
class ImageHostError(GatewayError):
    status, code = 502, "image_host_error"


class DownloadTimeout(GatewayError):
    status, code = 504, "download_timeout"


# 503 / 504: the model failed
class ModelUnavailable(GatewayError):
    status, code = 503, "model_unavailable"


class ModelIncompatible(ModelUnavailable):
    """The served model is not one the gateway can feed (wrong input, no labels)."""

    code = "model_incompatible"


class DecodeBusy(GatewayError):
    """The worker's decode memory budget stayed full for the whole bounded wait."""

    status, code = 503, "decode_busy"


class ModelVersionUnavailable(ModelUnavailable):
    """The model version a request was prepared for is not served where the request landed."""

    code = "model_version_unavailable"


class ModelTimeout(GatewayError):
    status, code = 504, "model_timeout"


class ModelError(GatewayError):
    status, code = 502, "model_error"


class BlockedURL(ForbiddenURL):
    """A URL the fetch policy refuses, with a machine `reason` (e.g. "private", "metadata")."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
