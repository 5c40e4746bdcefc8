"""Hostile things on loopback for the reliability suite: an image host with bad answers, the
bytes of broken, bomb and exotic images, canary listeners and a connect guard.

Everything listens on 127.0.0.1 or ::1. Non-loopback destinations are only ever named to an
in-process gateway whose resolver is injected and whose `socket.connect` is guarded.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import requests
from PIL import Image

from tests.gateway.support import assert_documented, concurrently

# --- image bytes ------------------------------------------------------------------------


def photo_like(size: tuple[int, int] = (160, 120), mode: str = "RGB") -> Image.Image:
    """A small image with structure (gradients), so every mode and orientation is visible."""
    width, height = size
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge(
        "RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90).resize(size), gradient)
    )
    if (width, height) != image.size:
        image = image.resize((width, height))
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """The image saved in the given format."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def good_jpeg() -> bytes:
    """The image the concurrent good requests send or fetch."""
    return encode(photo_like(), "JPEG", quality=90)


def exif_jpeg(orientation: int) -> bytes:
    """A JPEG carrying the given EXIF orientation tag (1-8)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo_like((120, 80)), "JPEG", exif=exif)


def png_pixel_bomb(side: int = 8000) -> bytes:
    """A valid greyscale PNG of side x side zero pixels: ~60 KB that inflate to side**2 bytes."""
    raw_row = b"\x00" + b"\x00" * side  # filter type 0, then the row
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(raw_row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def png_text_bomb(megabytes: int = 64) -> bytes:
    """A 1x1 PNG whose zTXt chunk inflates to `megabytes` MB (a metadata decompression bomb)."""
    image = encode(Image.new("L", (1, 1)), "PNG")
    bomb = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (megabytes << 20), 9))
    return image[:33] + bomb + image[33:]  # after the 8-byte signature and the 25-byte IHDR


def gif_pixel_bomb(side: int = 65535) -> bytes:
    """A GIF whose screen and single frame claim side x side pixels, with a two-pixel body."""
    screen = struct.pack("<HHBBB", side, side, 0x80, 0, 0)  # global table of 2 colours
    palette = b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0)
    data = b"\x02\x02\x44\x01\x00"  # LZW minimum code size 2, one tiny sub-block, terminator
    return b"GIF89a" + screen + palette + frame + data + b"\x3b"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def animated(fmt: str, frames: int, size: tuple[int, int] = (16, 16)) -> bytes:
    """An animation of `frames` distinct frames in GIF, PNG (APNG) or WebP."""
    colours = [(i % 256, (i * 7) % 256, (i * 13) % 256) for i in range(frames)]
    images = [Image.new("RGB", size, colour) for colour in colours]
    options: dict[str, Any] = {"save_all": True, "append_images": images[1:], "duration": 10}
    if fmt == "WEBP":
        options["lossless"] = True
    return encode(images[0], fmt, **options)


# (format, mode) pairs Pillow can write in the formats the gateway accepts
MODES = [
    ("PNG", "1"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "RGB"), ("PNG", "RGBA"),
    ("PNG", "I;16"), ("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK"),
    ("BMP", "1"), ("BMP", "L"), ("BMP", "P"), ("BMP", "RGB"), ("GIF", "P"), ("GIF", "L"),
    ("WEBP", "RGB"), ("WEBP", "RGBA"),
]  # fmt: skip


def mode_image(fmt: str, mode: str) -> bytes:
    """The structured test image converted to `mode` and saved as `fmt`."""
    image = photo_like((96, 64))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        image = image.convert(mode)
    return encode(image, fmt)


TIFF = encode(photo_like((32, 32)), "TIFF")
PSD = b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 32, 32, 8, 3) + b"\x00" * 64
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nnewpath 0 0 moveto showpage\n%%EOF\n"
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
    b'<image href="http://169.254.169.254/latest/meta-data/" width="64" height="64"/></svg>'
)
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"


# --- the hostile image host ---------------------------------------------------------------

Route = Callable[["HostileHandler", str], None]


class HostileHost(ThreadingHTTPServer):
    """A loopback HTTP server answering from a table of routes; records every path asked."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.stop = threading.Event()
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), HostileHandler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the gateway hanging up on a slow route is the point of several cases


class HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileHost

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.close_connection = True
        self.server.seen.append(self.path)
        path, _, query = self.path.partition("?")
        route = self.server.routes.get(path)
        try:
            if route is None:
                self.reply(404, b"no such route", "text/plain")
            else:
                route(self, query)
        except OSError:
            pass

    def reply(self, status: int, body: bytes = b"", content_type: str = "image/jpeg",
              **headers: str) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def wait(self, seconds: float) -> bool:
        """Sleep unless the host is stopping; True when it is."""
        return self.server.stop.wait(seconds)


def body(data: bytes, content_type: str = "image/jpeg") -> Route:
    return lambda h, q: h.reply(200, data, content_type)


def redirect(location: str, status: int = 302) -> Route:
    return lambda h, q: h.reply(status, Location=location)


def drip_body(h: HostileHandler, query: str) -> None:
    """Headers at once, then one byte of the body every 2 s."""
    data = good_jpeg()
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    for byte in data:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        if h.wait(2.0):
            return


def drip_headers(h: HostileHandler, query: str) -> None:
    """The status line, then one byte of a header every 1.5 s (under the read timeout)."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for byte in b"X-Slow: " + b"a" * 100:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        if h.wait(1.5):
            return


def hang(h: HostileHandler, query: str) -> None:
    """Read the request and never answer."""
    h.wait(30)


def declared_huge(h: HostileHandler, query: str) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", str(10**10))
    h.end_headers()
    h.wfile.flush()
    h.wait(10)


def endless(chunked: bool) -> Route:
    """A body with no declared length that never ends (chunked or close-delimited)."""

    def route(h: HostileHandler, query: str) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = good_jpeg()[:2] + b"\xff" * 65534
        for _ in range(10_000):  # ~650 MB at most; the gateway stops at its cap
            h.wfile.write(b"%x\r\n%b\r\n" % (len(block), block) if chunked else block)

    return route


def chunked(data: bytes) -> Route:
    def route(h: HostileHandler, query: str) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for start in range(0, len(data), 777):
            piece = data[start : start + 777]
            h.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        h.wfile.write(b"0\r\n\r\n")

    return route


def lying_length(declared: int, data: bytes) -> Route:
    """Declare one Content-Length and send `data` (longer or shorter), then hang up."""

    def route(h: HostileHandler, query: str) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        h.wfile.write(data)

    return route


def gzipped(data: bytes) -> Route:
    return lambda h, q: h.reply(200, gzip.compress(data), Content_Encoding="gzip")


@contextmanager
def serve_hostile(routes: dict[str, Route]) -> Iterator[HostileHost]:
    """Run a HostileHost on 127.0.0.1 for the duration of the block."""
    host = HostileHost(routes)
    thread = threading.Thread(target=host.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield host
    finally:
        host.stop.set()
        host.shutdown()
        host.server_close()


class NeverAccepts:
    """A listening socket nobody accepts on: the kernel completes the handshake, then silence."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


# --- canaries and the connect guard -------------------------------------------------------


class ConnectGuard:
    """Patches `socket.socket.connect` in this process: loopback goes through, anything else is
    recorded in `outside` and refused with ECONNREFUSED before a packet is sent."""

    def __init__(self) -> None:
        self.outside: list[str] = []
        self._real = socket.socket.connect
        self._lock = threading.Lock()

    def __enter__(self) -> ConnectGuard:
        real = self._real
        guard = self

        def guarded(sock: socket.socket, address: Any) -> None:
            host = address[0] if isinstance(address, tuple) else str(address)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(host.split("%", 1)[0])
                mapped = getattr(ip, "ipv4_mapped", None)
                if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
                    with guard._lock:
                        guard.outside.append(host)
                    raise ConnectionRefusedError(111, f"test guard: {host} is not loopback")
            real(sock, address)

        socket.socket.connect = guarded  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc_info: object) -> None:
        socket.socket.connect = self._real  # type: ignore[method-assign]


class TableResolver:
    """An injected resolver: names in the table get their answers (a list of lists is served
    one answer per call, the last repeating); every other name fails like NXDOMAIN."""

    def __init__(self, table: dict[str, list[str] | list[list[str]]]) -> None:
        self.table = table
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        with self._lock:
            count = self.calls[host] = self.calls.get(host, 0) + 1
        answer = self.table.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answer and isinstance(answer[0], list):
            return list(answer[min(count, len(answer)) - 1])
        return [str(a) for a in answer]


# --- one hostile request beside a good one -------------------------------------------------


def expect_refusal(
    bad: Callable[[], requests.Response],
    good: Callable[[], requests.Response],
    status: int,
    code: str,
    *,
    path: str = "/predict",
    within: float,
) -> requests.Response:
    """Send `bad` and `good` at the same moment; `bad` gets exactly `status` and `code` within
    `within` seconds (a bounded-time safety check), `good` still succeeds."""

    def timed() -> tuple[requests.Response, float]:
        started = time.monotonic()
        response = bad()
        return response, time.monotonic() - started

    (response, elapsed), good_response = concurrently(timed, good)
    assert response.status_code == status, response.text
    body = response.json()
    assert_documented(path, "POST", status, response.headers["Content-Type"], body)
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert elapsed < within, f"answered after {elapsed:.1f} s"
    assert good_response.status_code == 200, good_response.text
    answered: requests.Response = response
    return answered
