"""urllib3 connections that dial the already checked IP address without another lookup.

`gateway.fetch` resolves a host once, checks every address, then builds a connection to one
checked address literal. urllib3's own `_new_conn` would still run `getaddrinfo` (and an IDNA
encode) on that literal for every download, which showed as 5 % of the gateway's busy samples
under load. These subclasses create the socket for the literal's family and connect to it
directly, raising the same urllib3 errors as `_new_conn` does, so nothing else changes.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError


def _dial(conn: HTTPConnection) -> socket.socket:
    """A socket connected to `conn`'s host, which must be an IP address literal."""
    address = ipaddress.ip_address(conn._dns_host.strip("[]"))
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        for option in conn.socket_options or ():
            sock.setsockopt(*option)
        if conn.timeout is None or isinstance(conn.timeout, int | float):  # not urllib3's default
            sock.settimeout(conn.timeout)
        sock.connect((str(address), conn.port))
    except TimeoutError as exc:
        sock.close()
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from exc
    except OSError as exc:
        sock.close()
        raise NewConnectionError(conn, f"Failed to establish a new connection: {exc}") from exc
    sys.audit("http.client.connect", conn, conn.host, conn.port)
    return sock


class DialedHTTPConnection(HTTPConnection):
    """HTTPConnection to an IP address literal, without a lookup."""

    def _new_conn(self) -> socket.socket:
        return _dial(self)


class DialedHTTPSConnection(HTTPSConnection):
    """HTTPSConnection to an IP address literal (TLS still verified against server_hostname)."""

    def _new_conn(self) -> socket.socket:
        return _dial(self)
