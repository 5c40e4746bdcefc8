"""The canary and shadow shares: evenly spread, exact at the ends, safe across threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from gateway.routing import CANARY, STABLE, Router, Sampler
from gateway.service import total_variation


@pytest.mark.parametrize("percent", [0.5, 10.0, 33.3, 50.0, 90.0])
def test_every_run_of_requests_gets_the_share_within_two_requests(percent: float) -> None:
    sampler = Sampler(percent, start=0.123)
    picks = np.array([sampler() for _ in range(5000)], dtype=float)
    for length in (10, 100, 1000):
        windows = np.convolve(picks, np.ones(length), mode="valid")
        assert np.all(np.abs(windows - length * percent / 100) <= 2), length


def test_zero_and_a_hundred_percent_are_exact() -> None:
    assert not any(Sampler(0.0)() for _ in range(1000))
    assert all(Sampler(100.0)() for _ in range(1000))


def test_the_share_holds_across_threads() -> None:
    router = Router(canary_percent=10.0, shadow_percent=0.0)
    with ThreadPoolExecutor(8) as pool:
        routes = list(pool.map(lambda _: router.route(), range(4000)))
    assert set(routes) == {STABLE, CANARY}
    assert abs(routes.count(CANARY) - 400) <= 2


def test_total_variation_matches_labels_by_name_not_position() -> None:
    stable = ("pants", "shirt", "hat")
    reordered = ("hat", "shirt", "pants")
    row = np.array([0.7, 0.2, 0.1])
    assert total_variation(stable, row, reordered, row[::-1]) == pytest.approx(0.0)
    assert total_variation(stable, row, reordered, row) == pytest.approx(0.6)
    # a label only one version has counts fully
    assert total_variation(("a", "b"), np.array([1.0, 0.0]), ("c", "b"), np.array([1.0, 0.0])) == (
        pytest.approx(1.0)
    )
