"""Idle kept-alive connections to image hosts, reused only for an address checked again.

A new TCP connection per download (socket, connect, close; for HTTPS a TLS handshake too) was
about a sixth of the gateway's busy CPU under load. Real image hosts (CDNs, object stores)
keep HTTP/1.1 connections open, so a connection that finished a download cleanly waits here
for the next download from the same host.

Decisions, so that reuse never weakens the download's checks (gateway.fetch):
- The key is (scheme, checked IP, port, host name, CA bundle). `fetch` resolves and checks
  every address of each hop first and only looks up keys made from addresses that passed
  this time, so a pooled connection is never to an address today's DNS answer or policy
  refuses. The host name is in the key for HTTP as well as HTTPS (whose TLS session was
  verified for that name): virtual hosts sharing an IP never share a connection, so one
  name's server cannot answer for another's.
- Only a connection whose answer was read completely (a 2xx body up to its Content-Length or
  last chunk, not cut by the deadline, not marked `Connection: close`) comes back; every
  error, redirect or cap closes it.
- Before reuse, a connection with anything to read (the host closed it, or sent bytes nobody
  asked for) is closed instead: no stale or smuggled bytes are read as the next answer.
- Idle connections are kept for `idle_seconds` at most (below common server keep-alive
  timeouts, e.g. Apache's 5 s) and `max_idle` in all, oldest dropped first.
- A forked worker starts empty: the parent's sockets are not the child's to use.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

from urllib3.connection import HTTPConnection

# (scheme, ip, port, host name, CA bundle or None)
PoolKey = tuple[str, str, int, str, str | None]
MAX_IDLE = 32  # per worker process; a worker runs at most its thread count of downloads


class IdleConnections:
    """Connections that finished a download cleanly, by key, newest reused first."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self.max_idle = max_idle
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        # (key, serial) -> (connection, idle since); insertion order = oldest first
        self._idle: OrderedDict[tuple[PoolKey, int], tuple[HTTPConnection, float]] = OrderedDict()
        self._serial = 0

    def __len__(self) -> int:
        return len(self._idle)

    def take(
        self, keys: list[PoolKey], idle_seconds: float
    ) -> tuple[PoolKey, HTTPConnection] | None:
        """A live idle connection for the first of `keys` that has one (removed from the pool)."""
        found: tuple[PoolKey, HTTPConnection] | None = None
        with self._lock:
            stale = self._expire(time.monotonic() - idle_seconds)
            for key in keys:
                for entry in reversed(self._idle):  # newest first: least likely closed by now
                    if entry[0] == key:
                        conn, _ = self._idle.pop(entry)
                        found = (key, conn)
                        break
                if found is not None:
                    break
        for conn in stale:
            conn.close()
        if found is not None and not _quiet(found[1]):
            found[1].close()
            return None
        return found

    def give(self, key: PoolKey, conn: HTTPConnection, idle_seconds: float) -> None:
        """Keep `conn` (which finished a download cleanly) for the next download to `key`."""
        now = time.monotonic()
        with self._lock:
            stale = self._expire(now - idle_seconds)
            self._serial += 1
            self._idle[(key, self._serial)] = (conn, now)
            while len(self._idle) > self.max_idle:
                stale.append(self._idle.popitem(last=False)[1][0])
        for old in stale:
            old.close()

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, OrderedDict()
        for conn, _ in idle.values():
            conn.close()

    def _expire(self, before: float) -> list[HTTPConnection]:
        """Remove the connections idle since before `before` (the caller holds the lock)."""
        expired = []
        while self._idle:
            entry = next(iter(self._idle))
            conn, since = self._idle[entry]
            if since >= before:
                break
            del self._idle[entry]
            expired.append(conn)
        return expired


def _quiet(conn: HTTPConnection) -> bool:
    """Whether an idle connection is open with nothing to read: not closed by the host, no
    bytes nobody asked for, neither on the socket nor decrypted and waiting in the TLS layer."""
    if not conn.is_connected:  # readable: end of stream or unasked-for bytes
        return False
    pending = getattr(conn.sock, "pending", None)  # ssl.SSLSocket: decrypted, not yet read
    return not (pending is not None and pending() > 0)


IDLE_CONNECTIONS = IdleConnections()
