"""Which destinations the gateway may contact: strict URL parsing and the address policy.

The URL parser is deliberately narrower than RFC 3986 and WHATWG, so that no string means one
host to us and another to a resolver, proxy or server:

- only `http://` and `https://` with an authority (`http:host` and `http:/host` are invalid);
- printable ASCII only: no whitespace, control characters, backslashes or raw non-ASCII
  (internationalised names must be sent in their `xn--` form, paths percent-encoded);
- no userinfo at all (`user@`, `user:pass@`, a bare `@`);
- a host is an IPv6 literal in brackets without a zone, a strict dotted-quad IPv4 literal, or
  a name of letter/digit/hyphen/underscore labels. Every other numeric form (`2130706433`,
  `0177.0.0.1`, `0x7f.1`, `127.1`, `127.0.0.01`), i.e. any host whose last label is a number,
  is REFUSED as invalid rather than normalised: C resolvers (`inet_aton`) read these as
  addresses while other parsers read them as names, and refusing is the only answer that
  cannot be misread.

The address policy refuses everything that is not globally routable unicast, naming the
reason so metrics can count refusals. IPv6 forms that carry an IPv4 address (IPv4-mapped,
6to4, NAT64 `64:ff9b::/96`, Teredo) are judged by the embedded IPv4 address. `allow_private`
(local development only) lets loopback and private ranges through; link-local, metadata and
every other special range stay refused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from gateway.errors import BlockedURL, InvalidURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH: Final = 2048
DEFAULT_PORTS: Final = {"http": 80, "https": 443}

# Every `BlockedURL.reason` this module raises (a bounded set, fit for a metrics label).
REASONS: Final = frozenset(
    {
        "scheme",
        "credentials",
        "bad_address",
        "unspecified",
        "broadcast",
        "metadata",
        "loopback",
        "private",
        "link_local",
        "cgnat",
        "multicast",
        "documentation",
        "benchmark",
        "reserved",
    }
)
# Reasons `allow_private` lets through; everything else is refused whatever the settings.
PRIVATE_REASONS: Final = frozenset({"loopback", "private"})


def _table(rows: tuple[tuple[str, str], ...]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), reason) for net, reason in rows)


# First match wins, so single addresses come before the ranges that contain them.
_IPV4_SPECIAL = _table(
    (
        ("0.0.0.0/32", "unspecified"),
        ("255.255.255.255/32", "broadcast"),
        ("169.254.169.254/32", "metadata"),  # EC2/GCP/Azure/OCI instance metadata
        ("169.254.170.2/32", "metadata"),  # ECS task metadata and credentials
        ("169.254.170.23/32", "metadata"),  # EKS Pod Identity agent
        ("100.100.100.200/32", "metadata"),  # Alibaba Cloud instance metadata
        ("0.0.0.0/8", "reserved"),  # "this network"
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link_local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmark"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_IPV6_SPECIAL = _table(
    (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fd00:ec2::254/128", "metadata"),  # EC2 instance metadata over IPv6
        ("fd00:ec2::23/128", "metadata"),  # EKS Pod Identity agent over IPv6
        ("64:ff9b:1::/48", "reserved"),  # local-use NAT64 (RFC 8215), never global
        ("100::/64", "reserved"),  # discard-only
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("2001:2::/48", "benchmark"),
        ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo is judged before)
        ("fc00::/7", "private"),  # unique local
        ("fe80::/10", "link_local"),
        ("fec0::/10", "reserved"),  # deprecated site-local
        ("ff00::/8", "multicast"),
    )
)

_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


def address_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a globally routable unicast address, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded:
            return next((r for r in map(address_reason, embedded) if r is not None), None)
        table = _IPV6_SPECIAL
    else:
        table = _IPV4_SPECIAL
    for network, reason in table:
        if ip in network:
            return reason
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST_V6:
        return "reserved"
    # Defence in depth: whatever the standard library knows that this table does not.
    if not ip.is_global:
        return "reserved"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 transition form would really reach (empty for other forms)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64_WELL_KNOWN:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return []


def parse_address(address: str | IPAddress) -> IPAddress:
    """An address as returned by a resolver (an IPv6 zone suffix is dropped), or BlockedURL."""
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address
    try:
        return ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        raise BlockedURL(f"unusable address {address!r}", reason="bad_address") from None


def check_address(address: str | IPAddress, *, allow_private: bool = False) -> IPAddress:
    """Return the parsed address if the gateway may connect to it, else raise BlockedURL."""
    ip = parse_address(address)
    reason = address_reason(ip)
    if reason is None or (allow_private and reason in PRIVATE_REASONS):
        return ip
    raise BlockedURL(f"destination address {ip} is not allowed ({reason})", reason=reason)


@dataclass(frozen=True)
class Target:
    """One parsed, policy-checked http(s) URL: what to resolve, dial and ask for."""

    scheme: str
    host: str  # lower-case name, or an IP literal without brackets
    port: int
    path: str  # request target: path plus query, never empty, no fragment
    ip: IPAddress | None  # set when the host is an IP literal (nothing to resolve)

    @property
    def host_header(self) -> str:
        """The Host header value (also the authority of `url`)."""
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The normalised URL (fragment dropped)."""
        return f"{self.scheme}://{self.host_header}{self.path}"


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_ALLOWED_CHARS = re.compile(r"[\x21-\x5b\x5d-\x7e]*")  # printable ASCII minus backslash
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_url(url: object) -> Target:
    """Parse an image URL strictly; raise InvalidURL (malformed) or BlockedURL (refused)."""
    if not isinstance(url, str) or not url:
        raise InvalidURL("the image URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"the image URL is longer than {MAX_URL_LENGTH} characters")
    if _ALLOWED_CHARS.fullmatch(url) is None:
        raise InvalidURL(
            "the image URL may contain only printable ASCII without spaces or backslashes "
            "(percent-encode the rest, use xn-- names)"
        )
    scheme_match = _SCHEME.match(url)
    if scheme_match is None:
        raise InvalidURL("the image URL must start with http:// or https://")
    scheme = scheme_match.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise BlockedURL(f"scheme {scheme!r} is not allowed (http or https only)", reason="scheme")
    rest = url[scheme_match.end() :]
    if not rest.startswith("//"):
        raise InvalidURL("the image URL must have the form http(s)://host/path")
    rest = rest[2:].split("#", 1)[0]
    split_at = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:split_at], rest[split_at:]
    if "@" in authority:
        raise BlockedURL("credentials in the image URL are not allowed", reason="credentials")
    host, port = _split_host_port(authority, DEFAULT_PORTS[scheme])
    host, ip = _parse_host(host)
    if not path.startswith("/"):
        path = "/" + path
    return Target(scheme=scheme, host=host, port=port, path=path, ip=ip)


def _split_host_port(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise InvalidURL("unterminated IPv6 literal in the image URL")
        host, after = authority[: end + 1], authority[end + 1 :]
        if after and not after.startswith(":"):
            raise InvalidURL("unexpected characters after the IPv6 literal")
        port_text = after[1:] if after else None
    elif ":" in authority:
        host, port_text = authority.split(":", 1)
    else:
        host, port_text = authority, None
    if port_text is None:
        return host, default_port
    if _PORT.fullmatch(port_text) is None or not 0 < int(port_text) < 65536:
        raise InvalidURL(f"invalid port {port_text!r} in the image URL")
    return host, int(port_text)


def _parse_host(host: str) -> tuple[str, IPAddress | None]:
    if host.startswith("["):
        literal = host[1:-1]
        if "%" in literal:
            raise InvalidURL("IPv6 zone identifiers are not allowed in the image URL")
        try:
            ip6 = ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidURL(f"invalid IPv6 literal {host!r} in the image URL") from None
        return str(ip6), ip6
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > 253:
        raise InvalidURL("the image URL has an empty or over-long host name")
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        if _DOTTED_QUAD.fullmatch(host) is None:
            raise InvalidURL(
                f"ambiguous numeric host {host!r}: write IPv4 addresses as four decimal "
                "numbers without leading zeros"
            )
        ip4 = ipaddress.IPv4Address(host)
        return str(ip4), ip4
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidURL(f"invalid host name {host!r} in the image URL")
    return host, None
