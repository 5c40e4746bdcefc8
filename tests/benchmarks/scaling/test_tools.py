"""The load profile and the image host's latency model."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.scaling.image_host import MAX_DELAY_SECONDS, ImageHost
from benchmarks.scaling.loadgen import rate_at


def test_rate_follows_the_profile_linearly() -> None:
    profile = [(0.0, 10.0), (100.0, 110.0), (120.0, 110.0), (220.0, 10.0)]
    assert rate_at(profile, -1) == 10
    assert rate_at(profile, 50) == 60
    assert rate_at(profile, 110) == 110
    assert rate_at(profile, 170) == 60
    assert rate_at(profile, 300) == 10


def test_image_host_delays_have_the_configured_median_and_a_long_tail(tmp_path: Path) -> None:
    host = ImageHost(tmp_path, median_ms=200, sigma=0.6, seed=1)
    delays = sorted(host.delay() for _ in range(20_000))
    assert 0.19 < statistics.median(delays) < 0.21
    p99 = delays[int(0.99 * len(delays))]
    assert 0.7 < p99 < 0.9  # 200 ms x e^(2.33 x 0.6) = 810 ms
    assert max(delays) <= MAX_DELAY_SECONDS
    assert ImageHost(tmp_path, median_ms=300, sigma=0).delay() == 0.3


def test_image_host_serves_only_files_under_its_root(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    host = ImageHost(tmp_path, 1, 0)
    assert host.body("/a.jpg") == (200, b"\xff\xd8jpeg", "image/jpeg")
    assert host.body("/../etc/passwd")[0] == 404
    assert host.body("/missing.jpg")[0] == 404
