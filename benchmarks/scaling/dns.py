"""A DNS server on loopback that publishes one name's A records, like a headless Service.

gRPC's resolver reaches it with `dns://127.0.0.1:PORT/name:8500`. dnslib (PyPI) does the
wire format and the UDP server; this module only holds the record set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


class _Records(BaseResolver):  # type: ignore[misc,unused-ignore]  # dnslib is untyped
    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.lock = threading.Lock()
        self.names: dict[str, tuple[str, ...]] = {}

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        with self.lock:
            addresses = self.names.get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.A:
            for address in addresses:
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=self.ttl))
        return reply  # other types of a known name: NOERROR, no answer (as for AAAA)


class LoopbackDNS:
    """An authoritative DNS server on 127.0.0.1 (UDP) whose A records can change at run time."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ttl: int = 1) -> None:
        self._records = _Records(ttl)
        quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._server = DNSServer(self._records, address=host, port=port, logger=quiet)
        self.host = host
        self.port: int = self._server.server.server_address[1]

    def publish(self, name: str, addresses: Iterable[str]) -> None:
        """Make `name` resolve to exactly `addresses` (an empty list: NOERROR, no records)."""
        with self._records.lock:
            self._records.names[name.lower()] = tuple(addresses)

    def addresses(self, name: str) -> tuple[str, ...]:
        """What `name` resolves to now."""
        with self._records.lock:
            return self._records.names.get(name.lower(), ())

    def target(self, name: str, port: int) -> str:
        """The gRPC target that resolves `name` through this server."""
        return f"dns://{self.host}:{self.port}/{name}:{port}"

    def start(self) -> LoopbackDNS:
        """Serve in a daemon thread."""
        self._server.start_thread()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.stop()
        self._server.server.server_close()

    def __enter__(self) -> LoopbackDNS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
