"""Download image bytes from URLs chosen by strangers, safe by default.

Each hop parses the URL strictly, resolves the name once, refuses the URL if any answer is
not allowed (see `gateway.netguard`), then dials one of the checked addresses itself: the Host
header, TLS SNI and certificate verification stay on the name, so a DNS answer that changes
between the check and the connection (rebinding) cannot redirect the request. Redirects are
followed by hand and every target goes through the same checks.

Why our own code on urllib3: of the libraries that pin the checked address, `advocate` (built
on requests) has had no release since 2020, and `ssrfguard`/`drawbridge` are young 0.x
wrappers around httpx that would add a second HTTP stack with little track record. urllib3's
connection classes already connect to an IP while verifying TLS against `server_hostname`,
which leaves only the policy below to write and test here.

Decisions:
- DNS failure (or an empty answer) is `ImageHostError` (502): the URL was well-formed, the
  host could not be reached. A lookup is bounded by the total deadline (`DownloadTimeout`).
- We send `Accept-Encoding: identity` and refuse any other `Content-Encoding` with
  `ImageHostError` before reading the body: a stranger's body is never decompressed.
- A body shorter than its Content-Length is `ImageHostError`; bytes beyond it are not read.
- Timeouts: `connect_timeout` bounds each TCP connect plus TLS handshake, `read_timeout`
  each wait for data, and `total_timeout` everything (lookup, redirects, slow-drip headers
  or bodies): a `gateway.deadline.Deadline` shuts the live socket down when it passes.
- With `keep_alive_seconds` > 0 a connection that finished a download cleanly is kept idle
  (gateway.keepalive) and reused for a later download whose hop resolved and checked to the
  same address, port, scheme and host name; the checks above run for every hop all the same.
  If the host closed an idle connection just as it was reused (no answer at all), the
  request is sent once more on a new connection (a GET; within the same deadline).
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin

import certifi
import urllib3.exceptions
from urllib3.connection import HTTPConnection
from urllib3.response import BaseHTTPResponse

from gateway.deadline import Deadline
from gateway.dial import DialedHTTPConnection, DialedHTTPSConnection
from gateway.errors import (
    DownloadTimeout,
    GatewayError,
    ImageHostError,
    ImageTooLarge,
    InvalidURL,
)
from gateway.keepalive import IDLE_CONNECTIONS, IdleConnections, PoolKey
from gateway.netguard import IPAddress, Target, check_address, parse_url

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
READ_CHUNK = 64 * 1024
# Without a Content-Length the body's memory is claimed from the caller's `hold` a step at a
# time, so a slow download of a small photo does not tie up the largest image's bytes.
HOLD_STEP = 1024 * 1024

# Lookups run here so the total deadline bounds them; getaddrinfo itself cannot be cancelled.
_LOOKUPS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="gateway-dns")
_NETWORK_ERRORS = (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError)
# What sending on, or reading the answer from, a connection the host has closed raises
# (http.client.RemoteDisconnected is a ConnectionResetError).
_CLOSED_BY_HOST = (ConnectionError,)


class _ClosedByHost(Exception):
    """A reused idle connection turned out closed before any answer: dial a new one."""


def hold_nothing(nbytes: int) -> None:
    """A `hold` for callers that keep no memory budget."""


class Resolver(Protocol):
    """Turns a host name into the addresses to check and dial."""

    def __call__(self, host: str, port: int) -> list[str]: ...


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for TCP, in the system's preferred order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one download; `allow_private` is for local development only."""

    max_bytes: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_redirects: int = 3
    allow_private: bool = False
    user_agent: str = "clothing-gateway"
    ca_certs: str | None = None  # PEM bundle; None means certifi's
    keep_alive_seconds: float = 0.0  # idle time a finished connection is kept; 0 = close it

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_redirects < 0:
            raise ValueError("max_bytes must be positive and max_redirects not negative")
        if min(self.connect_timeout, self.read_timeout, self.total_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.keep_alive_seconds < 0:
            raise ValueError("keep_alive_seconds must not be negative")


@dataclass(frozen=True)
class FetchedImage:
    """The raw bytes of a downloaded image and where they finally came from."""

    data: bytes
    final_url: str
    elapsed: float


@dataclass(frozen=True)
class _Answer:
    location: str | None = None  # set for a redirect
    data: bytes = b""


def fetch_image(
    url: str,
    policy: FetchPolicy,
    resolver: Resolver = resolve_host,
    hold: Callable[[int], None] = hold_nothing,
    idle: IdleConnections = IDLE_CONNECTIONS,
) -> FetchedImage:
    """Download the image at `url` under `policy`; raise a GatewayError subclass on failure.

    `hold(n)` is called before the body may take more than n bytes (the Content-Length when the
    host declares one, else in HOLD_STEP steps): the gateway's decode budget waits or refuses
    there, so memory is claimed as a download needs it, not the largest image's up front.
    """
    started = time.monotonic()
    target = parse_url(url)
    visited = {target.url}
    with Deadline(policy.total_timeout) as deadline:
        redirects = 0
        while True:
            answer = _exchange(target, policy, resolver, deadline, hold, idle)
            if answer.location is None:
                return FetchedImage(
                    data=answer.data,
                    final_url=target.url,
                    elapsed=time.monotonic() - started,
                )
            if redirects >= policy.max_redirects:
                raise ImageHostError(f"the image host redirected more than {redirects} times")
            redirects += 1
            target = _redirect_target(target, answer.location)
            if target.url in visited:
                raise ImageHostError(f"redirect loop at {target.url}")
            visited.add(target.url)


def _redirect_target(current: Target, location: str) -> Target:
    try:
        return parse_url(urljoin(current.url, location))
    except (InvalidURL, ValueError) as exc:
        raise ImageHostError(f"the image host redirected to an invalid URL: {exc}") from None


def _exchange(
    target: Target,
    policy: FetchPolicy,
    resolver: Resolver,
    deadline: Deadline,
    hold: Callable[[int], None],
    idle: IdleConnections,
) -> _Answer:
    """One request: check every address, reuse or dial a checked one, read a redirect or body."""
    addresses = [target.ip] if target.ip is not None else _resolve(target, resolver, deadline)
    allowed = [check_address(a, allow_private=policy.allow_private) for a in addresses]
    if policy.keep_alive_seconds > 0:
        # only keys made from addresses that passed the checks just now
        keys = [_pool_key(target, ip, policy) for ip in allowed]
        taken = idle.take(keys, policy.keep_alive_seconds)
        if taken is not None:
            key, conn = taken
            try:
                return _request(conn, key, target, policy, deadline, hold, idle, reused=True)
            except _ClosedByHost:
                pass  # closed by the host as it was reused: the request goes out once more
    conn, ip = _connect(target, allowed, policy, deadline)
    key = _pool_key(target, ip, policy)
    return _request(conn, key, target, policy, deadline, hold, idle, reused=False)


def _pool_key(target: Target, ip: IPAddress, policy: FetchPolicy) -> PoolKey:
    """Which idle connections may serve this hop (see gateway.keepalive)."""
    return (target.scheme, str(ip), target.port, target.host, policy.ca_certs)


def _request(
    conn: HTTPConnection,
    key: PoolKey,
    target: Target,
    policy: FetchPolicy,
    deadline: Deadline,
    hold: Callable[[int], None],
    idle: IdleConnections,
    *,
    reused: bool,
) -> _Answer:
    """Send the GET on `conn` and read the answer; keep `conn` for reuse if it ended cleanly."""
    keep_alive = policy.keep_alive_seconds > 0
    headers = {
        "Host": target.host_header,
        "User-Agent": policy.user_agent,
        "Accept": "image/*,*/*;q=0.8",
        "Accept-Encoding": "identity",
    }
    if not keep_alive:
        headers["Connection"] = "close"
    response: BaseHTTPResponse | None = None
    reusable = False
    try:
        deadline.attach(conn.sock)
        conn.timeout = policy.read_timeout  # urllib3 applies it to the socket on request
        try:
            conn.request(
                "GET", target.path, headers=headers, preload_content=False, decode_content=False
            )
            response = conn.getresponse()
        except _CLOSED_BY_HOST as exc:
            if reused and not deadline.expired:
                raise _ClosedByHost from exc
            raise
        answer = _answer(response, policy, hold)
        # A socket shut by the watchdog reads as a clean end of stream: never trust what
        # was read (a truncated header block parses as a complete response).
        deadline.raise_if_fired()
        # Reusable: a body read to its end (response closed) on a connection http.client kept
        # open (no `Connection: close`, not HTTP/1.0, not delimited by the host closing it).
        reusable = (
            keep_alive and answer.location is None and response.closed and conn.sock is not None
        )
        return answer
    except GatewayError:
        raise
    except _NETWORK_ERRORS as exc:
        raise _network_error(exc, target, policy, deadline) from exc
    finally:
        deadline.detach()
        if response is not None:
            response.close()
        # after detach the watchdog can no longer shut the socket; a fire before it shows here
        if reusable and not deadline.expired:
            idle.give(key, conn, policy.keep_alive_seconds)
        else:
            conn.close()


def _answer(
    response: BaseHTTPResponse, policy: FetchPolicy, hold: Callable[[int], None]
) -> _Answer:
    """A redirect's Location, or the body of a 2xx answer; anything else is the host's fault."""
    if response.status in REDIRECT_STATUSES:
        location = response.headers.get("Location")
        if not location:
            raise ImageHostError(f"the image host answered {response.status} without Location")
        return _Answer(location=location)
    if not 200 <= response.status < 300:
        raise ImageHostError(f"the image host answered HTTP {response.status}")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ImageHostError(f"the image host sent a {encoding!r}-encoded body")
    data = _read_capped(response, policy.max_bytes, hold)
    return _Answer(data=data)


def _read_capped(response: BaseHTTPResponse, max_bytes: int, hold: Callable[[int], None]) -> bytes:
    """The raw body, refusing more than `max_bytes` whatever the headers claim; no byte is
    read before `hold` has granted room for it."""
    declared = response.length_remaining
    if declared is not None and declared > max_bytes:
        raise ImageTooLarge(f"the image is {declared} bytes; the limit is {max_bytes}")
    held = 0
    if declared is not None:
        held = declared + 1  # the one byte more that would show a host sending past it
        hold(held)
    body = bytearray()
    while True:
        if len(body) >= held:
            held = min(max_bytes + 1, held + HOLD_STEP)
            hold(held)
        chunk = response.read(min(READ_CHUNK, held - len(body)), decode_content=False)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")


def _resolve(target: Target, resolver: Resolver, deadline: Deadline) -> list[str]:
    """Resolve the host exactly once, within the deadline."""
    lookup = _LOOKUPS.submit(resolver, target.host, target.port)
    try:
        addresses = lookup.result(timeout=deadline.remaining())
    except TimeoutError:
        raise DownloadTimeout(f"looking up {target.host} took too long") from None
    except OSError as exc:
        raise ImageHostError(f"could not resolve {target.host}") from exc
    if not addresses:
        raise ImageHostError(f"could not resolve {target.host}")
    return addresses


def _connect(
    target: Target, addresses: list[IPAddress], policy: FetchPolicy, deadline: Deadline
) -> tuple[HTTPConnection, IPAddress]:
    """A connection to the first checked address that answers (and that address); never to
    anything else."""
    failure: Exception | None = None
    for ip in addresses:
        timeout = min(policy.connect_timeout, deadline.remaining())
        if timeout <= 0:
            break
        conn: HTTPConnection
        if target.scheme == "https":
            conn = DialedHTTPSConnection(
                str(ip),
                target.port,
                timeout=timeout,
                server_hostname=target.host,
                ssl_context=_tls_context(policy.ca_certs),
            )
        else:
            conn = DialedHTTPConnection(str(ip), target.port, timeout=timeout)
        try:
            conn.connect()
        except _NETWORK_ERRORS as exc:
            conn.close()
            failure = exc
            continue
        return conn, ip
    if failure is None:
        raise DownloadTimeout(f"the download did not finish within {policy.total_timeout:g} s")
    raise _network_error(failure, target, policy, deadline) from failure


def _network_error(
    exc: BaseException, target: Target, policy: FetchPolicy, deadline: Deadline
) -> GatewayError:
    """The client-facing error for a failure talking to the image host."""
    host = target.host_header
    if deadline.expired:
        return DownloadTimeout(f"the download did not finish within {policy.total_timeout:g} s")
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return ImageHostError(f"could not connect to {host}")
    if isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError):
        return DownloadTimeout(f"{host} did not answer in time")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ImageHostError(f"TLS certificate of {host} rejected: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError | urllib3.exceptions.SSLError):
        return ImageHostError(f"TLS with {host} failed")
    return ImageHostError(f"the connection to {host} failed ({type(exc).__name__})")


@functools.lru_cache(maxsize=4)
def _tls_context(ca_certs: str | None) -> ssl.SSLContext:
    """Certificate and host name verification on, TLS 1.2 or newer; shared by all threads."""
    return ssl.create_default_context(cafile=ca_certs or certifi.where())
