"""One error base class carrying a TF Serving status code; one subclass per code.

Every failure the server reports is a `ServingError`. The gRPC layer turns it into the
same status code and message TF Serving sends; the REST layer into `{"error": message}`
with TF Serving's HTTP status for that code (`http_server.cc`, `ToHTTPStatusCode`).
"""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """Base of every error the server reports to a client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        """The REST error body, as TF Serving writes it."""
        return {"error": self.message}


class InvalidArgument(ServingError):
    code, http_status = grpc.StatusCode.INVALID_ARGUMENT, 400


class FailedPrecondition(ServingError):
    code, http_status = grpc.StatusCode.FAILED_PRECONDITION, 400


class NotFound(ServingError):
    code, http_status = grpc.StatusCode.NOT_FOUND, 404


class Unavailable(ServingError):
    code, http_status = grpc.StatusCode.UNAVAILABLE, 503


class Unimplemented(ServingError):
    code, http_status = grpc.StatusCode.UNIMPLEMENTED, 501


class Internal(ServingError):
    code, http_status = grpc.StatusCode.INTERNAL, 500
