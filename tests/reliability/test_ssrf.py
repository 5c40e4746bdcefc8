"""SSRF: URLs chosen to reach what the gateway must never fetch, through HTTP.

Two setups, so that only loopback is ever connected to:
- the real gateway under gunicorn with the production policy (private URLs refused) gets URLs
  whose every reading points at loopback canaries: a refusal shows as the exact error and zero
  connections on the canaries;
- URLs that name other ranges (metadata, pod identity, CGNAT, private, transition forms) and
  names with chosen DNS answers go to the in-process app (`create_app` with a fetcher using an
  injected resolver), served on loopback, with `socket.connect` guarded in this process: any
  attempt at a non-loopback address is recorded and refused before a packet leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import requests
from gateway.app import create_app
from gateway.fetch import FetchPolicy, fetch_image
from gateway.settings import Settings
from gateway.tfserving import TFServingPredictor

from clothing_tools.local_stack import Running
from tests.gateway.support import Canary
from tests.helpers import serve_wsgi
from tests.reliability.hostile import (
    ConnectGuard,
    HostileHost,
    TableResolver,
    expect_refusal,
)
from tests.reliability.support import DOWNLOAD_DEADLINE, MAX_IMAGE_BYTES, SLACK

pytestmark = pytest.mark.slow
REFUSAL_WITHIN = SLACK + 4  # refusals need no download: bounded by the concurrent good upload
GoodCall = Callable[[str], Callable[[], requests.Response]]


@dataclass
class Canaries:
    v4: Canary
    v6: Canary

    @property
    def connections(self) -> int:
        return self.v4.connections + self.v6.connections


@pytest.fixture
def canaries() -> Iterator[Canaries]:
    """Listeners on 127.0.0.1 and ::1 that must see no connection."""
    pair = Canaries(Canary("127.0.0.1"), Canary("::1"))
    yield pair
    pair.v4.close()
    pair.v6.close()


def post_url(base: str, url: str) -> Callable[[], requests.Response]:
    return lambda: requests.post(f"{base}/predict", json={"url": url}, timeout=60)


# --- the real gateway, production policy, loopback canaries --------------------------------

# url template ({v4}/{v6}: canary ports) -> (status, code)
LOOPBACK_FORMS: dict[str, tuple[str, int, str]] = {
    "IPv4 loopback literal": ("http://127.0.0.1:{v4}/a.jpg", 400, "forbidden_url"),
    "localhost name": ("http://localhost:{v4}/a.jpg", 400, "forbidden_url"),
    "IPv6 loopback": ("http://[::1]:{v6}/a.jpg", 400, "forbidden_url"),
    "0.0.0.0 (reaches loopback on Linux)": ("http://0.0.0.0:{v4}/a.jpg", 400, "forbidden_url"),
    "[::] (reaches loopback on Linux)": ("http://[::]:{v6}/a.jpg", 400, "forbidden_url"),
    "IPv4-mapped IPv6": ("http://[::ffff:127.0.0.1]:{v4}/a.jpg", 400, "forbidden_url"),
    "IPv4-mapped IPv6, hex": ("http://[::ffff:7f00:1]:{v4}/a.jpg", 400, "forbidden_url"),
    "decimal IPv4": ("http://2130706433:{v4}/a.jpg", 400, "invalid_url"),
    "octal IPv4": ("http://0177.0.0.1:{v4}/a.jpg", 400, "invalid_url"),
    "hex IPv4 dotted": ("http://0x7f.0x0.0x0.0x1:{v4}/a.jpg", 400, "invalid_url"),
    "hex IPv4 whole": ("http://0x7f000001:{v4}/a.jpg", 400, "invalid_url"),
    "short IPv4 (127.1)": ("http://127.1:{v4}/a.jpg", 400, "invalid_url"),
    "zero-padded IPv4": ("http://127.000.000.001:{v4}/a.jpg", 400, "invalid_url"),
    "credentials": ("http://user:secret@127.0.0.1:{v4}/a.jpg", 400, "forbidden_url"),
    "user@ host confusion": ("http://example.com@127.0.0.1:{v4}/a.jpg", 400, "forbidden_url"),
    "port@host confusion": ("http://127.0.0.1:{v4}@localhost:{v4}/", 400, "forbidden_url"),
    "backslash authority trick": ("http://localhost:{v4}\\@127.0.0.1/", 400, "invalid_url"),
    "backslash scheme": ("http:\\\\127.0.0.1:{v4}\\a.jpg", 400, "invalid_url"),
    "fragment hides the host": ("http://127.0.0.1:{v4}#@localhost/a.jpg", 400, "forbidden_url"),
    "fragment with path": ("http://localhost:{v4}/#@127.0.0.1/a.jpg", 400, "forbidden_url"),
    "upper-case scheme and host": ("HTTP://LOCALHOST:{v4}/a.jpg", 400, "forbidden_url"),
    "file scheme": ("file:///etc/passwd", 400, "forbidden_url"),
    "gopher scheme": ("gopher://127.0.0.1:{v4}/_GET%20/", 400, "forbidden_url"),
    "ftp scheme": ("ftp://127.0.0.1:{v4}/a.jpg", 400, "forbidden_url"),
    "no slashes": ("http:127.0.0.1:{v4}/a.jpg", 400, "invalid_url"),
    "CRLF injection": ("http://127.0.0.1:{v4}/a.jpg\r\nX-Evil: 1", 400, "invalid_url"),
    "NUL byte": ("http://127.0.0.1:{v4}/a.jpg\x00.png", 400, "invalid_url"),
}


@pytest.mark.parametrize("case", list(LOOPBACK_FORMS))
def test_loopback_forms_are_refused_without_connecting(
    case: str, strict_gateway: Running, canaries: Canaries, good_upload: GoodCall
) -> None:
    template, status, code = LOOPBACK_FORMS[case]
    url = template.format(v4=canaries.v4.port, v6=canaries.v6.port)
    expect_refusal(
        post_url(strict_gateway.url, url), good_upload(strict_gateway.url), status, code,
        within=REFUSAL_WITHIN,
    )  # fmt: skip
    assert canaries.connections == 0


def test_a_batch_of_loopback_forms_connects_nowhere(
    strict_gateway: Running, canaries: Canaries
) -> None:
    ports = {"v4": canaries.v4.port, "v6": canaries.v6.port}
    urls = [template.format(**ports) for template, _, _ in LOOPBACK_FORMS.values()]
    response = requests.post(f"{strict_gateway.url}/predict/batch", json={"urls": urls}, timeout=60)
    assert response.status_code == 200, response.text
    codes = [item["error"]["code"] for item in response.json()["results"]]
    assert codes == [code for _, _, code in LOOPBACK_FORMS.values()]
    assert canaries.connections == 0


def test_redirects_cannot_leave_the_policy(
    open_gateway: Running, hostile_host: HostileHost, canaries: Canaries
) -> None:
    """Even with private URLs allowed, redirects to unspecified addresses, other schemes and
    credentials are refused, and loops end."""
    base, v4, v6 = open_gateway.url, canaries.v4.port, canaries.v6.port
    cases = {
        f"http://0.0.0.0:{v4}/a.jpg": (400, "forbidden_url"),
        f"http://[::]:{v6}/a.jpg": (400, "forbidden_url"),
        f"http://user:pw@127.0.0.1:{v4}/a.jpg": (400, "forbidden_url"),
        "file:///etc/passwd": (400, "forbidden_url"),
        f"gopher://127.0.0.1:{v4}/_x": (400, "forbidden_url"),
        f"http://0177.0.0.1:{v4}/a.jpg": (502, "image_host_error"),  # an invalid Location
    }
    for location, (status, code) in cases.items():
        url = hostile_host.url("/redirect?" + quote(location, safe=""))
        expect_refusal(
            post_url(base, url), post_url(base, hostile_host.url("/good.jpg")), status, code,
            within=REFUSAL_WITHIN,
        )  # fmt: skip
    for start in ("/loop-a", "/chain-0"):  # a loop, and four redirects where three are allowed
        expect_refusal(
            post_url(base, hostile_host.url(start)), post_url(base, hostile_host.url("/good.jpg")),
            502, "image_host_error", within=REFUSAL_WITHIN,
        )  # fmt: skip
    assert canaries.connections == 0


# --- the in-process app: other ranges, chosen DNS answers ---------------------------------

RESOLVER_TABLE: dict[str, list[str] | list[list[str]]] = {
    "metadata.test": ["169.254.169.254"],
    "pod-identity.test": ["169.254.170.23"],
    "mixed.test": ["93.184.216.34", "10.1.2.3"],  # a public answer first, then a private one
    "mixed6.test": ["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "fd00:ec2::254"],
    "cgnat.test": ["100.64.1.1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "nat64.test": ["64:ff9b::a9fe:a9fe"],
    "loopback.test": ["127.0.0.1"],
}


@dataclass
class InProcess:
    url: str
    guard: ConnectGuard
    resolver: TableResolver


def in_process(
    model_server: Running, allow_private: bool, table: dict[str, list[str] | list[list[str]]]
) -> Iterator[InProcess]:
    """The gateway app in this process with an injected resolver, behind a connect guard."""
    settings = Settings(
        tf_serving_host=model_server.grpc_target, allow_private_urls=allow_private,
        download_timeout=DOWNLOAD_DEADLINE, read_timeout=2.0, connect_timeout=1.0,
        max_image_bytes=MAX_IMAGE_BYTES, max_body_bytes=MAX_IMAGE_BYTES + 512 * 1024,
        log_level="WARNING",
    )  # fmt: skip
    policy = FetchPolicy(
        max_bytes=settings.max_image_bytes, connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout, total_timeout=settings.download_timeout,
        max_redirects=settings.max_redirects, allow_private=allow_private,
    )  # fmt: skip
    resolver = TableResolver(table)
    predictor = TFServingPredictor(settings)
    app = create_app(
        settings, predictor, fetcher=lambda url, hold: fetch_image(url, policy, resolver, hold)
    )
    with ConnectGuard() as guard:
        for url in serve_wsgi(app):
            yield InProcess(url, guard, resolver)
    predictor.close()


@pytest.fixture(scope="module")
def strict_app(model_server: Running) -> Iterator[InProcess]:
    yield from in_process(model_server, False, RESOLVER_TABLE)


@pytest.fixture(scope="module")
def open_app(model_server: Running, hostile_host: HostileHost) -> Iterator[InProcess]:
    table = {**RESOLVER_TABLE, "rebind.test": [["127.0.0.1"], ["169.254.169.254"]]}
    yield from in_process(model_server, True, table)


OTHER_RANGES: dict[str, tuple[str, int, str]] = {
    "EC2/GCP/Azure metadata": ("http://169.254.169.254/latest/meta-data/", 400, "forbidden_url"),
    "ECS task credentials": ("http://169.254.170.2/v2/credentials", 400, "forbidden_url"),
    "EKS Pod Identity agent": ("http://169.254.170.23/v1/credentials", 400, "forbidden_url"),
    "Alibaba metadata": ("http://100.100.100.200/latest/meta-data", 400, "forbidden_url"),
    "EC2 metadata over IPv6": ("http://[fd00:ec2::254]/latest/", 400, "forbidden_url"),
    "Pod Identity over IPv6": ("http://[fd00:ec2::23]/v1/credentials", 400, "forbidden_url"),
    "metadata, IPv4-mapped": ("http://[::ffff:169.254.169.254]/", 400, "forbidden_url"),
    "metadata, IPv4-mapped hex": ("http://[::ffff:a9fe:a9fe]/", 400, "forbidden_url"),
    "metadata, NAT64": ("http://[64:ff9b::a9fe:a9fe]/", 400, "forbidden_url"),
    "metadata, 6to4": ("http://[2002:a9fe:a9fe::1]/", 400, "forbidden_url"),
    "loopback, 6to4": ("http://[2002:7f00:1::1]/", 400, "forbidden_url"),
    "loopback, NAT64": ("http://[64:ff9b::127.0.0.1]/", 400, "forbidden_url"),
    "IPv4-compatible (deprecated)": ("http://[::127.0.0.1]/", 400, "forbidden_url"),
    "metadata, decimal": ("http://2852039166/", 400, "invalid_url"),
    "metadata, octal": ("http://0251.0376.0251.0376/", 400, "invalid_url"),
    "metadata, hex": ("http://0xa9fea9fe/", 400, "invalid_url"),
    "metadata, short form": ("http://169.254.43518/", 400, "invalid_url"),
    "CGNAT": ("http://100.64.0.1/", 400, "forbidden_url"),
    "private 10/8": ("http://10.0.0.1/", 400, "forbidden_url"),
    "private 172.16/12": ("http://172.16.5.4/", 400, "forbidden_url"),
    "private 192.168/16": ("http://192.168.1.1/", 400, "forbidden_url"),
    "link-local IPv6": ("http://[fe80::1]/", 400, "forbidden_url"),
    "IPv6 zone id": ("http://[fe80::1%25eth0]/", 400, "invalid_url"),
    "unique local IPv6": ("http://[fc00::1]/", 400, "forbidden_url"),
    "multicast": ("http://224.0.0.1/", 400, "forbidden_url"),
    "broadcast": ("http://255.255.255.255/", 400, "forbidden_url"),
    "name -> metadata": ("http://metadata.test/latest/meta-data/", 400, "forbidden_url"),
    "name -> pod identity": ("http://pod-identity.test/v1/credentials", 400, "forbidden_url"),
    "name -> public + private": ("http://mixed.test/a.jpg", 400, "forbidden_url"),
    "name -> public + metadata IPv6": ("http://mixed6.test/a.jpg", 400, "forbidden_url"),
    "name -> CGNAT": ("http://cgnat.test/a.jpg", 400, "forbidden_url"),
    "name -> IPv4-mapped private": ("http://mapped.test/a.jpg", 400, "forbidden_url"),
    "name -> NAT64 metadata": ("http://nat64.test/a.jpg", 400, "forbidden_url"),
    "name -> loopback": ("http://loopback.test/a.jpg", 400, "forbidden_url"),
    "name that does not resolve": ("http://nowhere.test/a.jpg", 502, "image_host_error"),
}


@pytest.mark.parametrize("case", list(OTHER_RANGES))
def test_other_ranges_are_refused_before_any_connection(
    case: str, strict_app: InProcess, good_upload: GoodCall
) -> None:
    url, status, code = OTHER_RANGES[case]
    before = dict(strict_app.resolver.calls)
    expect_refusal(
        post_url(strict_app.url, url), good_upload(strict_app.url), status, code,
        within=REFUSAL_WITHIN,
    )  # fmt: skip
    assert strict_app.guard.outside == []
    host = url.split("//", 1)[1].split("/", 1)[0]
    if host.endswith(".test"):  # every name is resolved exactly once per request
        assert strict_app.resolver.calls[host] == before.get(host, 0) + 1


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fd00:ec2::254]/latest/",
        "http://169.254.170.23/v1/credentials",
        "http://metadata.test/latest/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
def test_redirects_to_metadata_are_refused_even_with_private_urls_allowed(
    location: str, open_app: InProcess, hostile_host: HostileHost
) -> None:
    url = hostile_host.url("/redirect?" + quote(location, safe=""))
    expect_refusal(
        post_url(open_app.url, url), post_url(open_app.url, hostile_host.url("/good.jpg")),
        400, "forbidden_url", within=REFUSAL_WITHIN,
    )  # fmt: skip
    assert open_app.guard.outside == []


def test_a_dns_answer_that_changes_cannot_move_the_connection(
    open_app: InProcess, hostile_host: HostileHost
) -> None:
    """rebind.test answers loopback once, then the metadata address: the gateway resolves once
    per request and dials exactly the address it checked."""
    port = hostile_host.server_address[1]
    url = f"http://rebind.test:{port}/good.jpg"
    first = requests.post(f"{open_app.url}/predict", json={"url": url}, timeout=60)
    assert first.status_code == 200, first.text
    assert open_app.resolver.calls["rebind.test"] == 1
    second = requests.post(f"{open_app.url}/predict", json={"url": url}, timeout=60)
    assert second.status_code == 400 and second.json()["error"]["code"] == "forbidden_url"
    assert open_app.resolver.calls["rebind.test"] == 2
    assert open_app.guard.outside == []


def test_the_canaries_do_see_connections(open_gateway: Running, canaries: Canaries) -> None:
    """The zero-connection checks above can fail: an allowed URL does reach a canary."""
    for url in (f"http://127.0.0.1:{canaries.v4.port}/", f"http://[::1]:{canaries.v6.port}/"):
        response = post_url(open_gateway.url, url)()
        assert response.status_code == 502 and response.json()["error"]["code"] == (
            "image_host_error"
        )
    assert (canaries.v4.connections, canaries.v6.connections) == (1, 1)
