"""Downloads dial the checked address literal itself: no second lookup, same errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from gateway.dial import DialedHTTPConnection
from urllib3.exceptions import NewConnectionError


@pytest.fixture()
def listener() -> Iterator[tuple[str, int]]:
    """A loopback TCP server answering one fixed HTTP response per connection."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[:2]
    stop.set()
    thread.join()
    server.close()


def test_the_checked_literal_is_dialled_without_calling_getaddrinfo(
    listener: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_lookup(*args: object, **kwargs: object) -> list[object]:
        raise AssertionError(f"getaddrinfo{args} called")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    host, port = listener
    conn = DialedHTTPConnection(host, port, timeout=2.0)
    try:
        conn.request("GET", "/", headers={"Host": "example.com"})
        response = conn.getresponse()
        assert response.status == 200 and response.data == b"ok"
    finally:
        conn.close()


def test_a_refused_connection_is_the_same_urllib3_error_as_before() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        conn = DialedHTTPConnection("127.0.0.1", port, timeout=2.0)
        with pytest.raises(NewConnectionError, match="Failed to establish a new connection"):
            conn.connect()
