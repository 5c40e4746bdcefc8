"""Kept-alive downloads against a real HTTP/1.1 image host on loopback that counts connections.

Reuse must save connections without loosening any check: every hop is resolved and checked
again, host names never share a connection, and nothing a host sends past an answer, nor a
connection the host closed, is ever read as the next answer.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gateway.errors import BlockedURL, DownloadTimeout, ImageHostError
from gateway.fetch import FetchPolicy, fetch_image
from gateway.keepalive import IdleConnections

IMAGE = bytes(range(256)) * 40
POLICY = FetchPolicy(
    max_bytes=64 * 1024,
    connect_timeout=1.0,
    read_timeout=1.0,
    total_timeout=1.0,
    allow_private=True,
    keep_alive_seconds=5.0,
)
SLACK = 1.5  # a bounded-time margin for the deadline test, not a speed claim


class CountingHost(ThreadingHTTPServer):
    """An HTTP/1.1 image host that keeps connections open and counts them (TLS if given)."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.headers_seen: list[dict[str, str]] = []
        self.server_names: list[str | None] = []
        self.stop = threading.Event()
        self.tls = tls
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        super().__init__(("127.0.0.1", 0), Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        if self.tls is not None:  # the handshake happens on the handler thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the deadline test hangs up on a dripping answer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingHost

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # one handler per connection
        self.answered = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        route = self.path.strip("/").split("?")[0]
        self.answered += 1
        if route == "image":
            self.reply(IMAGE)
        elif route == "close":  # says so
            self.reply(IMAGE, Connection="close")
            self.close_connection = True
        elif route == "quiet-close":  # closes after the answer without saying so
            self.reply(IMAGE)
            self.close_connection = True
        elif route == "smuggle":  # an answer nobody asked for, after the real one was read
            self.reply(IMAGE)
            self.wfile.flush()
            self.server.stop.wait(0.05)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!")
        elif route == "flaky" and self.answered > 1:  # hangs up on a reused connection
            self.close_connection = True
        elif route == "flaky":
            self.reply(IMAGE)
        elif route == "redirect":
            self.reply(b"", status=302, Location="/image")
        elif route == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for byte in IMAGE[:100]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                if self.server.stop.wait(0.2):
                    return
        else:
            self.reply(b"no such route", status=404)

    def reply(self, body: bytes, status: int = 200, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def serve(server: CountingHost) -> Iterator[CountingHost]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def host() -> Iterator[CountingHost]:
    yield from serve(CountingHost())


@pytest.fixture
def base(host: CountingHost) -> str:
    return f"http://127.0.0.1:{host.server_address[1]}"


@pytest.fixture
def idle() -> Iterator[IdleConnections]:
    pool = IdleConnections()
    yield pool
    pool.clear()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt to a non-loopback address fails the test."""
    real_connect = socket.socket.connect

    def guarded_connect(sock: socket.socket, address: tuple[str, int]) -> None:
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"a test tried to connect to {address}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


class Table:
    """A resolver answering from a table; a list of answers is served one per call."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        answers = self.answers[host]
        return answers[min(self.calls, len(answers)) - 1]


def test_downloads_from_one_host_share_one_connection(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    for _ in range(3):
        assert fetch_image(f"{base}/image", POLICY, idle=idle).data == IMAGE
    assert host.connections == 1
    assert all("connection" not in headers for headers in host.headers_seen)


def test_without_keep_alive_each_download_closes_its_connection(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    policy = replace(POLICY, keep_alive_seconds=0)
    for _ in range(2):
        assert fetch_image(f"{base}/image", policy, idle=idle).data == IMAGE
    assert host.connections == 2
    assert [h["connection"] for h in host.headers_seen] == ["close", "close"]
    assert len(idle) == 0


def test_host_names_on_one_address_never_share_a_connection(
    host: CountingHost, idle: IdleConnections
) -> None:
    port = host.server_address[1]
    resolver = Table({"a.example": [["127.0.0.1"]], "b.example": [["127.0.0.1"]]})
    for name in ("a.example", "b.example", "a.example", "b.example"):
        image = fetch_image(f"http://{name}:{port}/image", POLICY, resolver, idle=idle)
        assert image.data == IMAGE
    assert host.connections == 2
    assert [h["host"] for h in host.headers_seen] == [
        f"{name}:{port}" for name in ("a.example", "b.example", "a.example", "b.example")
    ]


def test_every_download_checks_the_address_again_before_reusing(
    host: CountingHost, idle: IdleConnections
) -> None:
    port = host.server_address[1]
    # the second lookup rebinds the name to the instance metadata address
    resolver = Table({"rebind.example": [["127.0.0.1"], ["169.254.169.254"]]})
    url = f"http://rebind.example:{port}/image"
    assert fetch_image(url, POLICY, resolver, idle=idle).data == IMAGE
    assert len(idle) == 1
    with pytest.raises(BlockedURL) as refused:
        fetch_image(url, POLICY, resolver, idle=idle)
    assert refused.value.reason == "metadata"
    assert len(host.headers_seen) == 1  # the kept connection was not used


def test_a_connection_the_host_said_it_closes_is_not_kept(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    assert fetch_image(f"{base}/close", POLICY, idle=idle).data == IMAGE
    assert len(idle) == 0


def test_a_connection_the_host_closed_quietly_is_replaced(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    assert fetch_image(f"{base}/quiet-close", POLICY, idle=idle).data == IMAGE
    time.sleep(0.1)  # the host has hung up by now
    assert fetch_image(f"{base}/image", POLICY, idle=idle).data == IMAGE
    assert host.connections == 2


def test_bytes_sent_past_an_answer_are_never_read_as_the_next_answer(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    assert fetch_image(f"{base}/smuggle", POLICY, idle=idle).data == IMAGE
    time.sleep(0.1)  # the unasked-for answer has arrived
    assert fetch_image(f"{base}/image", POLICY, idle=idle).data == IMAGE
    assert host.connections == 2


def test_a_host_hanging_up_on_a_reused_connection_gets_the_request_on_a_new_one(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    assert fetch_image(f"{base}/flaky", POLICY, idle=idle).data == IMAGE
    assert fetch_image(f"{base}/flaky", POLICY, idle=idle).data == IMAGE
    assert host.connections == 2
    assert len(host.headers_seen) == 3  # sent once more after the hang-up


def test_redirects_close_their_hop_and_keep_the_last(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    image = fetch_image(f"{base}/redirect", POLICY, idle=idle)
    assert image.data == IMAGE
    assert image.final_url == f"{base}/image"
    assert len(idle) == 1


def test_a_reused_connection_is_still_bound_by_the_total_deadline(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    assert fetch_image(f"{base}/image", POLICY, idle=idle).data == IMAGE
    started = time.monotonic()
    with pytest.raises(DownloadTimeout):
        fetch_image(f"{base}/drip", POLICY, idle=idle)
    assert time.monotonic() - started < POLICY.total_timeout + SLACK
    assert host.connections == 1  # the drip came over the reused connection
    assert len(idle) == 0  # and a timed-out connection is not kept


def test_idle_connections_expire(host: CountingHost, base: str, idle: IdleConnections) -> None:
    policy = replace(POLICY, keep_alive_seconds=0.05)
    assert fetch_image(f"{base}/image", policy, idle=idle).data == IMAGE
    time.sleep(0.15)
    assert fetch_image(f"{base}/image", policy, idle=idle).data == IMAGE
    assert host.connections == 2


def test_the_pool_keeps_at_most_its_limit(host: CountingHost, idle: IdleConnections) -> None:
    port = host.server_address[1]
    small = IdleConnections(max_idle=2)
    names = [f"h{i}.example" for i in range(4)]
    resolver = Table({name: [["127.0.0.1"]] for name in names})
    try:
        for name in names:
            fetch_image(f"http://{name}:{port}/image", POLICY, resolver, idle=small)
        assert len(small) == 2
    finally:
        small.clear()


def test_concurrent_downloads_over_kept_connections_do_not_mix(
    host: CountingHost, base: str, idle: IdleConnections
) -> None:
    threads_results: list[bytes] = []
    lock = threading.Lock()

    def worker(start: int) -> None:
        for i in range(start, start + 10):
            data = fetch_image(f"{base}/image?{i}", POLICY, idle=idle).data
            with lock:
                threads_results.append(data)

    workers = [threading.Thread(target=worker, args=(n * 10,)) for n in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(10)
    assert threads_results == [IMAGE] * 40
    assert host.connections <= 4


def test_https_connections_are_reused_only_for_the_verified_name(
    tmp_path: Path, idle: IdleConnections
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2",
         "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"],
        cwd=tmp_path, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    policy = replace(POLICY, ca_certs=str(tmp_path / "cert.pem"))
    resolver = Table({"images.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    for server in serve(CountingHost(tls=context)):
        port = server.server_address[1]
        for _ in range(3):
            image = fetch_image(f"https://images.test:{port}/image", policy, resolver, idle=idle)
            assert image.data == IMAGE
        assert server.connections == 1
        assert server.server_names == ["images.test"]  # one handshake, verified for the name
        with pytest.raises(ImageHostError, match="TLS"):  # never the kept images.test one
            fetch_image(f"https://other.test:{port}/image", policy, resolver, idle=idle)
        assert server.server_names == ["images.test", "other.test"]
