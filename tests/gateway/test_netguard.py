"""The address policy and the strict URL parser: the security core of image downloads."""

from __future__ import annotations

import ipaddress

import pytest
from gateway.errors import BlockedURL, ForbiddenURL, InvalidURL
from gateway.netguard import REASONS, address_reason, check_address, parse_url

# Every special-purpose range, with an address inside it and the reason it must be refused.
REFUSED_ADDRESSES = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "reserved"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    ("100.100.100.200", "metadata"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.0.1", "link_local"),
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("169.254.170.23", "metadata"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.0.0.1", "reserved"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "reserved"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmark"),
    ("198.19.255.254", "benchmark"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::7f00:1", "reserved"),  # deprecated IPv4-compatible ::127.0.0.1
    ("100::1", "reserved"),
    ("2001:2::1", "benchmark"),
    ("2001:10::1", "reserved"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("5f00::1", "reserved"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fd00:ec2::254", "metadata"),
    ("fd00:ec2::23", "metadata"),
    ("fe80::1", "link_local"),
    ("fe80::1%eth0", "link_local"),
    ("febf::1", "link_local"),
    ("fec0::1", "reserved"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    # IPv4-mapped: judged by the embedded IPv4 address
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.1.2.3", "private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::ffff:a9fe:a9fe", "metadata"),
    # NAT64 well-known prefix: embedded IPv4 in the last 32 bits
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "metadata"),
    ("64:ff9b::c0a8:101", "private"),
    # local-use NAT64 prefix: never global
    ("64:ff9b:1::808:808", "reserved"),
    # 6to4: embedded IPv4 in bits 16-47
    ("2002:7f00:1::1", "loopback"),
    ("2002:a9fe:a9fe::1", "metadata"),
    ("2002:c0a8:101::", "private"),
    # Teredo: server and (inverted) client IPv4 are both judged
    ("2001:0:7f00:1:0:0:f7f7:f7f7", "loopback"),  # server 127.0.0.1
    ("2001:0:808:808:0:0:5601:5601", "metadata"),  # client 169.254.169.254
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"),  # client 192.0.2.45
]

PUBLIC_ADDRESSES = [
    "1.1.1.1",
    "8.8.8.8",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "192.169.0.1",
    "198.20.0.1",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001::1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:808:808:0:0:f7f7:f7f7",  # Teredo, server and client 8.8.8.8
]


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_special_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    with pytest.raises(BlockedURL) as caught:
        check_address(address)
    assert caught.value.reason == reason
    assert reason in REASONS
    assert isinstance(caught.value, ForbiddenURL)
    assert (caught.value.status, caught.value.code) == (400, "forbidden_url")


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_reason(ipaddress.ip_address(address)) is None
    assert check_address(address) == ipaddress.ip_address(address)


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_allow_private_lets_only_loopback_and_private_through(address: str, reason: str) -> None:
    if reason in {"loopback", "private"}:
        check_address(address, allow_private=True)
    else:
        with pytest.raises(BlockedURL) as caught:
            check_address(address, allow_private=True)
        assert caught.value.reason == reason


@pytest.mark.parametrize("address", ["", "localhost", "1.2.3", "::g", "2130706433", "0177.0.0.1"])
def test_unparseable_resolver_answers_are_refused(address: str) -> None:
    with pytest.raises(BlockedURL) as caught:
        check_address(address)
    assert caught.value.reason == "bad_address"


def test_check_address_accepts_ip_objects() -> None:
    with pytest.raises(BlockedURL):
        check_address(ipaddress.IPv4Address("10.0.0.1"))
    assert check_address(ipaddress.IPv6Address("2606:4700::1")) == ipaddress.IPv6Address(
        "2606:4700::1"
    )


# --- URL parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path", "normalised"),
    [
        ("http://example.com", "http", "example.com", 80, "/", "http://example.com/"),
        ("HTTPS://Images.Example.COM/a.jpg", "https", "images.example.com", 443, "/a.jpg", None),
        ("http://example.com:8080/a?b=1#frag", "http", "example.com", 8080, "/a?b=1", None),
        ("http://example.com?x=@y", "http", "example.com", 80, "/?x=@y", None),
        ("http://example.com/p@th/a.jpg", "http", "example.com", 80, "/p@th/a.jpg", None),
        ("http://example.com./a", "http", "example.com", 80, "/a", "http://example.com/a"),
        ("http://xn--bcher-kva.example/", "http", "xn--bcher-kva.example", 80, "/", None),
        ("http://my_host-1.example/", "http", "my_host-1.example", 80, "/", None),
        ("http://0x7f.example.com/", "http", "0x7f.example.com", 80, "/", None),
        ("http://93.184.216.34/i.png", "http", "93.184.216.34", 80, "/i.png", None),
        ("https://[2606:4700::1]:8443/x", "https", "2606:4700::1", 8443, "/x", None),
        ("http://[::FFFF:127.0.0.1]/", "http", "::ffff:7f00:1", 80, "/", "http://[::ffff:7f00:1]/"),
        ("http://example.com/a%20b.jpg", "http", "example.com", 80, "/a%20b.jpg", None),
    ],
)
def test_valid_urls_are_parsed_and_normalised(
    url: str, scheme: str, host: str, port: int, path: str, normalised: str | None
) -> None:
    target = parse_url(url)
    assert (target.scheme, target.host, target.port, target.path) == (scheme, host, port, path)
    if normalised is not None:
        assert target.url == normalised


def test_ip_literals_are_marked_and_names_are_not() -> None:
    assert parse_url("http://10.0.0.1/").ip == ipaddress.IPv4Address("10.0.0.1")
    assert parse_url("http://[fe80::1]/").ip == ipaddress.IPv6Address("fe80::1")
    assert parse_url("http://example.com/").ip is None


def test_host_header_carries_non_default_ports_only() -> None:
    assert parse_url("http://example.com:80/").host_header == "example.com"
    assert parse_url("https://example.com:443/").host_header == "example.com"
    assert parse_url("http://example.com:443/").host_header == "example.com:443"
    assert parse_url("https://[::1]:8443/").host_header == "[::1]:8443"


@pytest.mark.parametrize(
    "url",
    [
        # every numeric form other than the strict dotted quad is refused, never normalised
        "http://2130706433/",
        "http://0x7f000001/",
        "http://017700000001/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://127.0.1/",
        "http://127.0.0.01/",
        "http://127.000.000.001/",
        "http://256.0.0.1/",
        "http://1.2.3.4.5/",
        "http://169.254.43518/",
        "http://0/",
        "http://0x/",
        "http://example.0x1f/",
        "http://example.123/",
        # not http(s)://authority
        "",
        "example.com/a.jpg",
        "//example.com/a.jpg",
        "http:example.com/a.jpg",
        "http:/example.com/a.jpg",
        "http://",
        "http:///a.jpg",
        "http://:80/",
        # characters parsers disagree on
        "http://example.com\\@127.0.0.1/",
        "http:\\\\example.com\\a.jpg",
        "http://example.com/a\\b",
        "http://exa mple.com/",
        " http://example.com/",
        "http://example.com/a b",
        "http://example.com/\r\nX-Injected: 1",
        "http://example.com/\t",
        "http://example.com/\x00",
        "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/",  # fullwidth "example"
        "http://bücher.example/",
        "http://example.com/ä.jpg",
        "http://exa%6dple.com/",
        # hosts and ports
        "http://-example.com/",
        "http://example-.com/",
        "http://a..b/",
        "http://" + "a" * 64 + ".com/",
        "http://" + ".".join(["abcdefgh"] * 30) + ".com/",
        "http://example.com:/",
        "http://example.com:0/",
        "http://example.com:65536/",
        "http://example.com:-1/",
        "http://example.com:8o/",
        "http://example.com:80:80/",
        "http://::1/",
        "http://[::1/",
        "http://[::1]x/",
        "http://[127.0.0.1]/",
        "http://[v1.abc]/",
        "http://[fe80::1%25eth0]/",
        "http://[fe80::1%eth0]/",
        "http://" + "a" * 2048 + ".com/",
    ],
)
def test_malformed_and_ambiguous_urls_are_invalid(url: str) -> None:
    with pytest.raises(InvalidURL) as caught:
        parse_url(url)
    assert (caught.value.status, caught.value.code) == (400, "invalid_url")


@pytest.mark.parametrize("url", [None, 42, b"http://example.com/", ["http://example.com/"]])
def test_non_string_urls_are_invalid(url: object) -> None:
    with pytest.raises(InvalidURL):
        parse_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/a.jpg", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("data:image/png;base64,iVBORw0KGgo=", "scheme"),
        ("httpx://example.com/", "scheme"),
        ("http://user@example.com/", "credentials"),
        ("http://user:pass@example.com/", "credentials"),
        ("http://@example.com/", "credentials"),
        ("http://:@example.com/", "credentials"),
        ("http://example.com@127.0.0.1/", "credentials"),
        ("https://a@b@example.com/", "credentials"),
        ("http://example.com%2f@evil.com/", "credentials"),
    ],
)
def test_other_schemes_and_credentials_are_forbidden(url: str, reason: str) -> None:
    with pytest.raises(BlockedURL) as caught:
        parse_url(url)
    assert caught.value.reason == reason
    assert caught.value.code == "forbidden_url"
