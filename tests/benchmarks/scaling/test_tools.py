"""The load profile and its records, the image host's latency model, the HPA's CPU requests."""

from __future__ import annotations

import statistics
from pathlib import Path

from benchmarks.scaling.declared import read_declared
from benchmarks.scaling.image_host import MAX_DELAY_SECONDS, ImageHost
from benchmarks.scaling.loadgen import Record, answer_fields, parse, rate_at
from benchmarks.scaling.promotion import check_answers
from benchmarks.scaling.scenarios import request_scale


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


def test_a_load_line_carries_the_answers_version_and_top_class() -> None:
    version, top = answer_fields(
        b'{"model": {"name": "m", "version": 3, "route": "stable"}, "top": "pants"}'
    )
    line = f"12.5 0.2 200 7 {version} {top}"
    assert parse(line) == Record(12.5, 0.2, "200", 7, "3", "pants")
    assert answer_fields(b'{"error": {"code": "model_version_unavailable"}}') == ("-", "-")
    assert answer_fields(b"<html>") == ("-", "-")


def test_answers_named_with_another_versions_labels_are_counted_as_mislabelled() -> None:
    expected = {"2": ["pants", "shirt"], "3": ["pants", "shirt"]}
    records = [
        Record(0, 0.1, "200", 0, "2", "pants"),
        Record(0, 0.1, "200", 1, "3", "shirt"),
        Record(0, 0.1, "200", 1, "3", "shorts"),  # version 2's order read on 3's scores
        Record(0, 0.1, "200", 0, "4", "pants"),  # a version nobody deployed
        Record(0, 0.1, "503", 0, "-", "-"),
    ]
    checked = check_answers(records, expected)
    assert checked["mislabelled"] == 1
    assert checked["unknown_version"] == 1
    assert checked["answers_by_version"] == {"2": 1, "3": 2, "4": 1}
    assert checked["outcomes"] == {"200": 4, "503": 1}


def test_cpu_requests_are_scaled_to_fit_the_local_maximum_on_this_machine() -> None:
    declared = read_declared()
    per_slot = declared.gateway.cpu_request + declared.model.cpu_request
    scale = request_scale(declared, local_max=4, cpus=2)
    assert scale < 1
    assert abs(4 * per_slot * scale - 2) < 1e-9
    # a machine with room for every pod's request leaves the requests as declared
    assert request_scale(declared, local_max=4, cpus=64) == 1.0
