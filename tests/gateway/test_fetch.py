"""The image downloader against real HTTP(S) servers on loopback.

No test connects anywhere but loopback: the `dialled` fixture guards `socket.connect` and fails
the test on any other address, and refusals of non-loopback ranges are proved with injected
resolvers whose answers are checked and never dialled.
"""

from __future__ import annotations

import gzip
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from gateway.errors import (
    BlockedURL,
    DecodeBusy,
    DownloadTimeout,
    ImageHostError,
    ImageTooLarge,
    InvalidURL,
)
from gateway.fetch import HOLD_STEP, FetchedImage, FetchPolicy, fetch_image, resolve_host

IMAGE = bytes(range(256)) * 40  # 10 KiB that no route produces by accident
MAX_BYTES = 64 * 1024
# A bounded-time safety margin for tests that must stop at a deadline (not a speed claim).
SLACK = 1.5

POLICY = FetchPolicy(
    max_bytes=MAX_BYTES,
    connect_timeout=1.0,
    read_timeout=1.0,
    total_timeout=2.0,
    allow_private=True,
    user_agent="clothing-gateway-test/1",
)


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]


class ImageHost(ThreadingHTTPServer):
    """A loopback image host that records what it was asked."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 drops SYNs under the concurrent test

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[SeenRequest] = []
        self.stop = threading.Event()
        self.tls = tls
        super().__init__(address, ImageHostHandler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake happens on the handler thread, at the first read.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up on slow routes is the point of several tests

    def requests_for(self, path: str) -> list[SeenRequest]:
        return [r for r in self.seen if r.path == path]


class ImageHostHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ImageHost

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.close_connection = True
        self.server.seen.append(
            SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()})
        )
        path, _, query = self.path.partition("?")
        name, *args = path.strip("/").split("/")
        route = getattr(self, "route_" + name.replace("-", "_"), None)
        try:
            if route is None:
                self.reply(404, b"no such route")
            else:
                route(*args, query=query)
        except OSError:
            pass

    def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def route_image(self, *_: str, query: str) -> None:
        self.reply(200, IMAGE, Content_Type="image/jpeg")

    def route_status(self, code: str, *, query: str) -> None:
        self.reply(int(code), b"nope")

    def route_redirect(self, *_: str, query: str) -> None:
        """302 to the URL in the query (`?to=...`), unquoted."""
        self.reply(302, Location=unquote(query.removeprefix("to=")))

    def route_chain(self, hops: str, *, query: str) -> None:
        left = int(hops)
        self.reply(301, Location=f"/chain/{left - 1}" if left > 1 else "../image")

    def route_loop_a(self, *_: str, query: str) -> None:
        self.reply(302, Location="/loop-b")

    def route_loop_b(self, *_: str, query: str) -> None:
        self.reply(307, Location="loop-a")

    def route_self(self, *_: str, query: str) -> None:
        self.reply(308, Location="/self")

    def route_no_location(self, *_: str, query: str) -> None:
        self.reply(302)

    def route_slow_redirect(self, hop: str, *, query: str) -> None:
        self.server.stop.wait(0.4)
        self.reply(302, Location=f"/slow-redirect/{int(hop) + 1}")

    def route_drip_body(self, *_: str, query: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        for byte in IMAGE[:100]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            if self.server.stop.wait(0.2):
                return

    def route_drip_headers(self, *_: str, query: str) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for byte in b"X-Slow: " + b"a" * 100:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            if self.server.stop.wait(0.2):
                return

    def route_declared_huge(self, *_: str, query: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10**9))
        self.end_headers()
        self.wfile.flush()
        self.server.stop.wait(5)

    def route_lying_short(self, *_: str, query: str) -> None:
        """Claims 10 bytes, sends 5 MB."""
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.end_headers()
        for _chunk in range(80):
            self.wfile.write(IMAGE * 6)

    def route_lying_long(self, *_: str, query: str) -> None:
        """Claims 5000 bytes, sends 10 and hangs up."""
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.write(IMAGE[:10])

    def route_two_lengths(self, *_: str, query: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.send_header("Content-Length", "20")
        self.end_headers()
        self.wfile.write(IMAGE[:20])

    def route_no_length(self, size: str, *, query: str) -> None:
        """A body delimited by closing the connection."""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        body = (IMAGE * (int(size) // len(IMAGE) + 1))[: int(size)]
        self.wfile.write(body)

    def route_chunked(self, size: str, *, query: str) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        body = (IMAGE * (int(size) // len(IMAGE) + 1))[: int(size)]
        for start in range(0, len(body), 1000):
            chunk = body[start : start + 1000]
            self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def route_gzip(self, *_: str, query: str) -> None:
        self.reply(200, gzip.compress(IMAGE), Content_Type="image/jpeg", Content_Encoding="gzip")


def serve(host: ImageHost) -> Iterator[ImageHost]:
    thread = threading.Thread(target=host.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield host
    finally:
        host.stop.set()
        host.shutdown()
        host.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    """An HTTP image host on 127.0.0.1."""
    yield from serve(ImageHost(("127.0.0.1", 0)))


@pytest.fixture
def base(image_host: ImageHost) -> str:
    return f"http://127.0.0.1:{image_host.server_address[1]}"


@pytest.fixture
def port(image_host: ImageHost) -> int:
    return int(image_host.server_address[1])


@pytest.fixture(autouse=True)
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a socket connects to; any non-loopback address fails the test."""
    seen: list[str] = []
    real_connect = socket.socket.connect

    def guarded_connect(sock: socket.socket, address: tuple[str, int]) -> None:
        seen.append(address[0])
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"a test tried to connect to {address}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    return seen


class StubResolver:
    """Answers from a table (a list of answers is served one per call) and counts the calls."""

    def __init__(self, answers: dict[str, list[str] | list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answer = self.answers[host]
        if answer and isinstance(answer[0], list):
            return list(answer[min(len(self.calls), len(answer)) - 1])
        return [str(a) for a in answer]


# --- downloads that work ---------------------------------------------------------------


def test_downloads_the_exact_bytes(base: str) -> None:
    image = fetch_image(f"{base}/image", POLICY)
    assert isinstance(image, FetchedImage)
    assert image.data == IMAGE
    assert image.final_url == f"{base}/image"
    assert image.elapsed > 0


def test_sends_identity_encoding_our_agent_and_closes(base: str, image_host: ImageHost) -> None:
    fetch_image(f"{base}/image?headers", POLICY)
    (request,) = image_host.requests_for("/image?headers")
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["user-agent"] == "clothing-gateway-test/1"
    assert request.headers["connection"] == "close"
    assert request.headers["host"] == base.removeprefix("http://")


def test_pins_the_checked_address_and_keeps_the_host_name(
    port: int, image_host: ImageHost, dialled: list[str]
) -> None:
    resolver = StubResolver({"images.example.com": ["127.0.0.1"]})
    image = fetch_image(f"http://images.example.com:{port}/image?pinned", POLICY, resolver)
    assert image.data == IMAGE
    assert image.final_url == f"http://images.example.com:{port}/image?pinned"
    assert resolver.calls == [("images.example.com", port)]
    assert dialled == ["127.0.0.1"]
    (request,) = image_host.requests_for("/image?pinned")
    assert request.headers["host"] == f"images.example.com:{port}"


def test_dns_rebinding_cannot_move_the_connection(port: int, dialled: list[str]) -> None:
    resolver = StubResolver({"rebind.example": [["127.0.0.1"], ["169.254.169.254"], ["10.0.0.1"]]})
    image = fetch_image(f"http://rebind.example:{port}/image", POLICY, resolver)
    assert image.data == IMAGE
    assert len(resolver.calls) == 1
    assert dialled == ["127.0.0.1"]


def test_falls_back_to_the_next_checked_address(port: int, dialled: list[str]) -> None:
    # Nothing listens on 127.0.0.2 at this port, so that connection is refused.
    resolver = StubResolver({"two.example": ["127.0.0.2", "127.0.0.1"]})
    assert fetch_image(f"http://two.example:{port}/image", POLICY, resolver).data == IMAGE
    assert dialled == ["127.0.0.2", "127.0.0.1"]


def test_default_resolver_resolves_localhost(port: int) -> None:
    assert any(ipaddress.ip_address(a).is_loopback for a in resolve_host("localhost", port))
    assert fetch_image(f"http://localhost:{port}/image", POLICY).data == IMAGE


def test_concurrent_downloads_do_not_mix(base: str) -> None:
    urls = [f"{base}/chunked/{1000 + i}" for i in range(12)] + [f"{base}/chain/2"] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        images = list(pool.map(lambda url: fetch_image(url, POLICY), urls))
    for url, image in zip(urls, images, strict=True):
        expected = IMAGE if "chain" in url else (IMAGE * 2)[: int(url.rsplit("/", 1)[1])]
        assert image.data == expected


# --- redirects ---------------------------------------------------------------------------


def test_follows_relative_redirects_up_to_the_limit(base: str) -> None:
    image = fetch_image(f"{base}/chain/3", POLICY)  # /chain/3 -> 2 -> 1 -> ../image
    assert image.data == IMAGE
    assert image.final_url == f"{base}/image"


def test_more_redirects_than_allowed_fail(base: str) -> None:
    with pytest.raises(ImageHostError, match="more than 3"):
        fetch_image(f"{base}/chain/4", POLICY)
    with pytest.raises(ImageHostError, match="more than 0"):
        fetch_image(f"{base}/chain/1", replace(POLICY, max_redirects=0))


@pytest.mark.parametrize("start", ["/loop-a", "/self"])
def test_redirect_loops_fail(base: str, start: str) -> None:
    with pytest.raises(ImageHostError, match="loop") as caught:
        fetch_image(base + start, replace(POLICY, max_redirects=10))
    assert caught.value.status == 502


def test_redirect_without_location_fails(base: str) -> None:
    with pytest.raises(ImageHostError, match="Location"):
        fetch_image(f"{base}/no-location", POLICY)


def test_absolute_redirect_to_another_name_is_resolved_and_pinned(
    base: str, port: int, image_host: ImageHost, dialled: list[str]
) -> None:
    resolver = StubResolver({"cdn.example": ["127.0.0.1"]})
    target = quote(f"http://cdn.example:{port}/image?via-redirect")
    image = fetch_image(f"{base}/redirect?to={target}", POLICY, resolver)
    assert image.data == IMAGE
    assert image.final_url == f"http://cdn.example:{port}/image?via-redirect"
    assert resolver.calls == [("cdn.example", port)]
    assert dialled == ["127.0.0.1", "127.0.0.1"]
    (request,) = image_host.requests_for("/image?via-redirect")
    assert request.headers["host"] == f"cdn.example:{port}"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://metadata.example/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/", "metadata"),
        ("http://link.example/", "link_local"),
        ("http://[::ffff:a9fe:a9fe]/", "metadata"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme"),
        ("http://user:secret@127.0.0.1/", "credentials"),
    ],
)
def test_every_redirect_target_is_checked(
    base: str, location: str, reason: str, dialled: list[str]
) -> None:
    resolver = StubResolver(
        {"metadata.example": ["169.254.169.254"], "link.example": ["2606:4700::1", "fe80::1"]}
    )
    with pytest.raises(BlockedURL) as caught:
        fetch_image(f"{base}/redirect?to={quote(location)}", POLICY, resolver)
    assert caught.value.reason == reason
    assert dialled == ["127.0.0.1"]  # only the first hop


@pytest.mark.parametrize(
    "location", ["http://0x7f.1/", "http://exa mple.com/", "http:\\\\127.0.0.1\\", "http://[::1"]
)
def test_invalid_redirect_targets_are_the_hosts_fault(base: str, location: str) -> None:
    with pytest.raises(ImageHostError, match="invalid URL"):
        fetch_image(f"{base}/redirect?to={quote(location)}", POLICY)


# --- refusals before any connection ------------------------------------------------------


@pytest.fixture
def canary() -> Iterator[socket.socket]:
    """A loopback listener that must never see a connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    yield listener
    with pytest.raises(TimeoutError):
        listener.accept()[0].close()
    listener.close()


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["127.0.0.1"], "loopback"),
        (["::1"], "loopback"),
        (["10.0.0.1"], "private"),
        (["192.168.0.10"], "private"),
        (["169.254.169.254"], "metadata"),
        (["169.254.170.23"], "metadata"),
        (["fd00:ec2::254"], "metadata"),
        (["100.64.0.1"], "cgnat"),
        (["0.0.0.0"], "unspecified"),
        (["::"], "unspecified"),
        (["::ffff:127.0.0.1"], "loopback"),
        (["64:ff9b::a9fe:a9fe"], "metadata"),
        (["2002:a00:1::1"], "private"),
        (["224.0.0.251"], "multicast"),
        (["93.184.216.34", "10.0.0.1"], "private"),
        (["2606:4700::1111", "fe80::1%eth0"], "link_local"),
        (["1.1.1.1", "8.8.8.8", "127.0.0.1"], "loopback"),
        (["not-an-address"], "bad_address"),
    ],
)
def test_refused_answers_are_never_dialled(
    answers: list[str], reason: str, canary: socket.socket, dialled: list[str]
) -> None:
    canary_port = canary.getsockname()[1]
    resolver = StubResolver({"victim.example": answers})
    with pytest.raises(BlockedURL) as caught:
        fetch_image(
            f"http://victim.example:{canary_port}/", replace(POLICY, allow_private=False), resolver
        )
    assert caught.value.reason == reason
    assert len(resolver.calls) == 1
    assert dialled == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/image", "loopback"),
        ("http://[::1]:{port}/image", "loopback"),
        ("http://10.1.2.3:{port}/image", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:127.0.0.1]:{port}/image", "loopback"),
    ],
)
def test_ip_literals_are_checked_without_resolving(
    url: str, reason: str, port: int, dialled: list[str]
) -> None:
    resolver = StubResolver({})
    with pytest.raises(BlockedURL) as caught:
        fetch_image(url.format(port=port), replace(POLICY, allow_private=False), resolver)
    assert caught.value.reason == reason
    assert resolver.calls == []
    assert dialled == []


@pytest.mark.parametrize("answers", [["169.254.169.254"], ["fe80::1"], ["224.0.0.1"]])
def test_allow_private_still_refuses_link_local_and_metadata(
    answers: list[str], dialled: list[str]
) -> None:
    with pytest.raises(BlockedURL):
        fetch_image("http://meta.example/", POLICY, StubResolver({"meta.example": answers}))
    assert dialled == []


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433:{port}/",
        "http://0177.0.0.1:{port}/",
        "http://0x7f.1:{port}/",
        "http://127.1:{port}/",
        "http://example.com\\@127.0.0.1:{port}/",
    ],
)
def test_numeric_and_odd_hosts_are_invalid_even_when_private_is_allowed(
    url: str, port: int, dialled: list[str]
) -> None:
    resolver = StubResolver({})
    with pytest.raises(InvalidURL):
        fetch_image(url.format(port=port), POLICY, resolver)
    assert resolver.calls == []
    assert dialled == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [("ftp://127.0.0.1/a.jpg", "scheme"), ("http://u:p@127.0.0.1/", "credentials")],
)
def test_allow_private_keeps_scheme_and_credential_rules(
    url: str, reason: str, dialled: list[str]
) -> None:
    with pytest.raises(BlockedURL) as caught:
        fetch_image(url, POLICY)
    assert caught.value.reason == reason
    assert dialled == []


# --- host failures -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [304, 403, 404, 500])
def test_non_2xx_answers_are_host_errors_with_the_status(base: str, code: int) -> None:
    with pytest.raises(ImageHostError, match=str(code)) as caught:
        fetch_image(f"{base}/status/{code}", POLICY)
    assert (caught.value.status, caught.value.code) == (502, "image_host_error")


def test_refused_connection_is_a_host_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        free_port = probe.getsockname()[1]
    with pytest.raises(ImageHostError, match="could not connect"):
        fetch_image(f"http://127.0.0.1:{free_port}/image", POLICY)


def test_dns_failure_is_a_host_error() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(ImageHostError, match="resolve"):
        fetch_image("http://nowhere.example/", POLICY, failing)
    with pytest.raises(ImageHostError, match="resolve"):
        fetch_image("http://nowhere.example/", POLICY, StubResolver({"nowhere.example": []}))


def test_gzip_bodies_are_refused_not_decoded(base: str) -> None:
    with pytest.raises(ImageHostError, match="gzip"):
        fetch_image(f"{base}/gzip", POLICY)


def test_body_shorter_than_its_length_is_a_host_error(base: str) -> None:
    with pytest.raises(ImageHostError):
        fetch_image(f"{base}/lying-long", POLICY)


def test_conflicting_lengths_are_a_host_error(base: str) -> None:
    with pytest.raises(ImageHostError):
        fetch_image(f"{base}/two-lengths", POLICY)


# --- size cap ----------------------------------------------------------------------------


def test_declared_length_over_the_cap_is_refused_before_reading(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(ImageTooLarge) as caught:
        fetch_image(f"{base}/declared-huge", POLICY)
    assert (caught.value.status, caught.value.code) == (413, "image_too_large")
    # The route then sends nothing: reading would have ended in a timeout instead.
    assert time.monotonic() - started < POLICY.read_timeout


@pytest.mark.parametrize("route", ["no-length", "chunked"])
def test_cap_is_enforced_while_streaming(base: str, route: str) -> None:
    assert len(fetch_image(f"{base}/{route}/{MAX_BYTES}", POLICY).data) == MAX_BYTES
    with pytest.raises(ImageTooLarge):
        fetch_image(f"{base}/{route}/{MAX_BYTES + 1}", POLICY)
    with pytest.raises(ImageTooLarge):
        fetch_image(f"{base}/{route}/{50 * MAX_BYTES}", POLICY)


def test_a_declared_length_is_held_once_before_the_body_is_read(base: str) -> None:
    holds: list[int] = []
    assert fetch_image(f"{base}/image", POLICY, hold=holds.append).data == IMAGE
    assert holds == [len(IMAGE) + 1]


def test_a_body_of_unknown_length_is_held_a_step_at_a_time(base: str) -> None:
    size = 2 * HOLD_STEP + HOLD_STEP // 2
    policy = replace(POLICY, max_bytes=4 * HOLD_STEP)
    holds: list[int] = []
    assert len(fetch_image(f"{base}/no-length/{size}", policy, hold=holds.append).data) == size
    assert holds == [HOLD_STEP, 2 * HOLD_STEP, 3 * HOLD_STEP]


def test_a_refused_hold_ends_the_download_with_its_error(base: str) -> None:
    def refuse(nbytes: int) -> None:
        raise DecodeBusy("no room")

    with pytest.raises(DecodeBusy):
        fetch_image(f"{base}/no-length/{MAX_BYTES}", POLICY, hold=refuse)


def test_chunked_bodies_are_reassembled(base: str) -> None:
    assert fetch_image(f"{base}/chunked/5000", POLICY).data == (IMAGE * 2)[:5000]


def test_a_lying_short_length_reads_no_further(base: str) -> None:
    assert fetch_image(f"{base}/lying-short", POLICY).data == IMAGE[:10]


# --- time limits -------------------------------------------------------------------------


def bounded(policy: FetchPolicy, call: Callable[[], object]) -> float:
    """Run `call` expecting DownloadTimeout; return how long it took."""
    started = time.monotonic()
    with pytest.raises(DownloadTimeout) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (504, "download_timeout")
    return time.monotonic() - started


def test_slow_drip_body_hits_the_total_deadline(base: str) -> None:
    policy = replace(POLICY, read_timeout=1.0, total_timeout=0.8)
    elapsed = bounded(policy, lambda: fetch_image(f"{base}/drip-body", policy))
    assert elapsed < policy.total_timeout + SLACK


def test_slow_drip_headers_hit_the_total_deadline(base: str) -> None:
    policy = replace(POLICY, read_timeout=1.0, total_timeout=0.8)
    elapsed = bounded(policy, lambda: fetch_image(f"{base}/drip-headers", policy))
    assert elapsed < policy.total_timeout + SLACK


def test_total_deadline_spans_redirects(base: str) -> None:
    policy = replace(POLICY, read_timeout=1.0, total_timeout=1.0, max_redirects=20)
    elapsed = bounded(policy, lambda: fetch_image(f"{base}/slow-redirect/0", policy))
    assert elapsed < policy.total_timeout + SLACK


def test_a_host_that_accepts_and_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts
        policy = replace(POLICY, read_timeout=0.3, total_timeout=5.0)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/image"
        elapsed = bounded(policy, lambda: fetch_image(url, policy))
    assert elapsed < policy.read_timeout + SLACK


def test_a_slow_lookup_hits_the_total_deadline() -> None:
    release = threading.Event()

    def stuck(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["127.0.0.1"]

    policy = replace(POLICY, total_timeout=0.3)
    try:
        elapsed = bounded(policy, lambda: fetch_image("http://slow-dns.example/", policy, stuck))
    finally:
        release.set()
    assert elapsed < policy.total_timeout + SLACK


def test_a_later_shorter_deadline_fires_first(base: str) -> None:
    # the shared watchdog sleeps until the earliest deadline, so one that arrives later but
    # ends sooner must wake it
    long_policy = replace(POLICY, read_timeout=5.0, total_timeout=3.0)
    short_policy = replace(POLICY, read_timeout=5.0, total_timeout=0.5)
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(
            bounded, long_policy, lambda: fetch_image(f"{base}/drip-body", long_policy)
        )
        time.sleep(0.2)
        short = bounded(short_policy, lambda: fetch_image(f"{base}/drip-body", short_policy))
        assert not slow.done()
        assert short < short_policy.total_timeout + SLACK
        assert slow.result() >= long_policy.total_timeout


def test_one_watchdog_thread_serves_every_download(
    base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="test-client") as pool:
        list(pool.map(lambda _: fetch_image(f"{base}/image", POLICY), range(32)))
    ours = [t.name for t in started if not t.name.startswith("test-client")]
    ours = [name for name in ours if "process_request_thread" not in name]  # the image host
    assert set(ours) <= {"gateway-download-watchdog"}  # no thread per download
    names = [thread.name for thread in threading.enumerate()]
    assert names.count("gateway-download-watchdog") == 1


def test_a_finished_download_is_never_cut_later(base: str) -> None:
    policy = replace(POLICY, total_timeout=0.3)
    first = fetch_image(f"{base}/image", policy)
    time.sleep(0.4)  # its deadline passes while nothing is attached to it
    assert first.data == IMAGE
    assert fetch_image(f"{base}/image", policy).data == IMAGE


def test_deadlines_still_fire_in_a_forked_worker(base: str) -> None:
    fetch_image(f"{base}/image", POLICY)  # the parent's watchdog thread is running
    policy = replace(POLICY, read_timeout=5.0, total_timeout=0.5)
    pid = os.fork()
    if pid == 0:  # child: the parent's thread did not survive the fork
        code = 1
        try:
            started = time.monotonic()
            fetch_image(f"{base}/drip-body", policy)
        except DownloadTimeout:
            code = 0 if time.monotonic() - started < policy.total_timeout + SLACK else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_policy_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        replace(POLICY, max_bytes=0)
    with pytest.raises(ValueError):
        replace(POLICY, total_timeout=0)
    with pytest.raises(ValueError):
        replace(POLICY, max_redirects=-1)


# --- IPv6 loopback -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ipv6_host() -> Iterator[ImageHost]:
    """An HTTP image host on ::1 (skipped where IPv6 is unavailable)."""

    class IPv6ImageHost(ImageHost):
        address_family = socket.AF_INET6

    try:
        host = IPv6ImageHost(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    yield from serve(host)


def test_ipv6_loopback_literal(ipv6_host: ImageHost, dialled: list[str]) -> None:
    v6_port = ipv6_host.server_address[1]
    image = fetch_image(f"http://[::1]:{v6_port}/image?v6", POLICY)
    assert image.data == IMAGE
    assert dialled == ["::1"]
    (request,) = ipv6_host.requests_for("/image?v6")
    assert request.headers["host"] == f"[::1]:{v6_port}"
    with pytest.raises(BlockedURL):
        fetch_image(f"http://[::1]:{v6_port}/image", replace(POLICY, allow_private=False))


# --- TLS: SNI and certificate checks stay on the name ----------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA and a certificate for images.test, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (d / "leaf.ext").write_text(
        "subjectAltName=DNS:images.test\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    commands = [
        [
            openssl,
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gateway test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        [
            openssl,
            "req",
            *ec,
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=images.test",
        ],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    ]
    for command in commands:
        subprocess.run(command, cwd=d, check=True, capture_output=True, timeout=30)
    return Pki(ca=d / "ca.pem", cert=d / "leaf.pem", key=d / "leaf.key")


@pytest.fixture(scope="module")
def tls_host(pki: Pki) -> Iterator[tuple[ImageHost, list[str | None]]]:
    """An HTTPS image host on 127.0.0.1 serving the images.test certificate; records SNI."""
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)
    for host in serve(ImageHost(("127.0.0.1", 0), tls=context)):
        yield host, names


def test_https_verifies_the_name_on_the_pinned_address(
    tls_host: tuple[ImageHost, list[str | None]], pki: Pki, dialled: list[str]
) -> None:
    host, names = tls_host
    tls_port = host.server_address[1]
    policy = replace(POLICY, ca_certs=str(pki.ca))
    resolver = StubResolver({"images.test": ["127.0.0.1"]})
    names.clear()
    image = fetch_image(f"https://images.test:{tls_port}/image?tls", policy, resolver)
    assert image.data == IMAGE
    assert image.final_url == f"https://images.test:{tls_port}/image?tls"
    assert dialled == ["127.0.0.1"]
    assert names == ["images.test"]
    (request,) = host.requests_for("/image?tls")
    assert request.headers["host"] == f"images.test:{tls_port}"


@pytest.mark.parametrize(
    ("url", "ca"),
    [
        ("https://other.test:{port}/image", "test"),  # certificate is for images.test
        ("https://127.0.0.1:{port}/image", "test"),  # no IP in the certificate
        ("https://images.test:{port}/image", "certifi"),  # unknown CA
    ],
)
def test_https_refuses_certificates_that_do_not_match(
    tls_host: tuple[ImageHost, list[str | None]], pki: Pki, url: str, ca: str
) -> None:
    tls_port = tls_host[0].server_address[1]
    policy = replace(POLICY, ca_certs=str(pki.ca) if ca == "test" else None)
    resolver = StubResolver({"other.test": ["127.0.0.1"], "images.test": ["127.0.0.1"]})
    with pytest.raises(ImageHostError, match="TLS"):
        fetch_image(url.format(port=tls_port), policy, resolver)


def test_https_drip_body_hits_the_total_deadline(
    tls_host: tuple[ImageHost, list[str | None]], pki: Pki
) -> None:
    tls_port = tls_host[0].server_address[1]
    policy = replace(POLICY, ca_certs=str(pki.ca), read_timeout=1.0, total_timeout=0.8)
    resolver = StubResolver({"images.test": ["127.0.0.1"]})
    url = f"https://images.test:{tls_port}/drip-body"
    elapsed = bounded(policy, lambda: fetch_image(url, policy, resolver))
    assert elapsed < policy.total_timeout + SLACK
