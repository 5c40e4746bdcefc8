"""Serve the dataset's photos on 127.0.0.1: `python -m benchmarks.photo_server PORT DIRECTORY`.

Python's `http.server` as a separate process, with two changes: HTTP/1.1 (kept-alive
connections, as a real image host offers them) and a listen backlog of 1024 instead of 5.
Under load the gateways open up to 16 downloads at once; with a backlog of 5 the kernel
drops the extra connection attempts and each waits for the client's one-second SYN
retransmission, which would show up as second-long latencies of our harness, not of the
gateways.
"""

from __future__ import annotations

import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves files over HTTP/1.1 without a log line per request.

    HTTP/1.1 keeps a connection open for the next request, as CDNs and object stores do
    (http.server's default is HTTP/1.0, a connection per photo). A client that asks for
    `Connection: close` (urllib, so the seed-style gateway) still gets a connection per photo.
    """

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm on, the body of an
    # answer on a kept-alive connection waits for the client's delayed ACK (40 ms on Linux).
    # Web servers and CDNs send with TCP_NODELAY.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


class PhotoHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with a deep listen backlog."""

    request_queue_size = 1024
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    """Serve until killed."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[0].isdigit():
        print("usage: python -m benchmarks.photo_server PORT DIRECTORY", file=sys.stderr)
        return 2
    handler = functools.partial(QuietHandler, directory=args[1])
    with PhotoHTTPServer(("127.0.0.1", int(args[0])), handler) as server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
