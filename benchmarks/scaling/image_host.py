"""An image host with realistic latency: `python -m benchmarks.scaling.image_host`.

Serves the dataset's photos over HTTP/1.1 (keep-alive) and holds each answer for a delay drawn
from a log-normal distribution (median `--median-ms`, shape `--sigma`; 0 gives a fixed delay),
so the gateways' downloads wait like they do on real hosts (100-1000 ms). asyncio, so hundreds
of delayed answers cost one thread; own code because it is this one loop and a library server
would not draw per-request delays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import mimetypes
import random
import sys
from collections.abc import Sequence
from pathlib import Path

MAX_DELAY_SECONDS = 5.0


class ImageHost:
    """Files under `root`, each answer delayed by a log-normal draw."""

    def __init__(self, root: Path, median_ms: float, sigma: float, seed: int = 0) -> None:
        self.root = root.resolve()
        self.median = median_ms / 1000
        self.sigma = sigma
        self.random = random.Random(seed)

    def delay(self) -> float:
        """Seconds to hold the next answer."""
        if self.sigma <= 0:
            return self.median
        return min(MAX_DELAY_SECONDS, self.median * math.exp(self.random.gauss(0, self.sigma)))

    def body(self, target: str) -> tuple[int, bytes, str]:
        """(status, body, content type) for a request path."""
        relative = target.split("?", 1)[0].lstrip("/")
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return 404, b"not found\n", "text/plain"
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return 200, path.read_bytes(), kind

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer requests on one connection until the client closes it."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in header_lines if line)
                }
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                await asyncio.sleep(self.delay())
                status, body, kind = self.body(target)
                close = headers.get("connection", "").lower() == "close"
                reason = "OK" if status == 200 else "Not Found"
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode()
                    + (body if method != "HEAD" else b"")
                )
                await writer.drain()
                if close:
                    break
        writer.close()


async def serve(host: ImageHost, address: str, port: int) -> None:
    """Serve forever."""
    server = await asyncio.start_server(host.handle, address, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: address, port, photo folder, latency distribution."""
    parser = argparse.ArgumentParser(prog="image_host", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True, help="folder of photos to serve")
    parser.add_argument("--median-ms", type=float, default=200.0)
    parser.add_argument("--sigma", type=float, default=0.6, help="log-normal shape; 0: fixed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"image_host: error: {args.root} is not a folder", file=sys.stderr)
        return 2
    host = ImageHost(args.root, args.median_ms, args.sigma, args.seed)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, args.address, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
