"""Request ids, log lines and metrics stay correct while costing less per request."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from datetime import UTC, datetime

from gateway.logs import JsonFormatter, LineHandler
from gateway.metrics import Metrics
from gateway.request_ids import RequestIds
from prometheus_client import generate_latest

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def test_generated_request_ids_are_32_hex_digits_and_unique_across_threads() -> None:
    ids = RequestIds()
    seen: list[str] = []

    def draw() -> None:
        seen.extend(ids.new() for _ in range(2000))

    threads = [threading.Thread(target=draw) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 16_000
    assert all(HEX32.match(value) for value in seen)


def test_a_forked_process_draws_other_request_ids_than_its_parent() -> None:
    ids = RequestIds()
    parent = ids.new()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first id and leave at once
        os.write(write, ids.new().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert HEX32.match(child) and child[:16] != parent[:16]


def test_each_record_is_one_complete_json_line_even_from_many_threads() -> None:
    read, write = os.pipe()
    stream = os.fdopen(write, "w")
    handler = LineHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway.test-lines")
    logger.propagate = False
    logger.setLevel("INFO")
    logger.addHandler(handler)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read, 65536), b"")))
    reader.start()

    def log_many(n: int) -> None:
        for i in range(300):
            logger.info("line %s", i, extra={"request_id": f"{n}-{i}", "pad": "x" * 500})

    try:
        threads = [threading.Thread(target=log_many, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        logger.error("long", extra={"request_id": "long", "pad": "y" * 10_000})
    finally:
        logger.removeHandler(handler)
        stream.close()
        reader.join()
        os.close(read)
    lines = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    assert len(lines) == 6 * 300 + 1
    assert {line["request_id"] for line in lines[:-1]} == {
        f"{n}-{i}" for n in range(6) for i in range(300)
    }
    assert lines[-1]["pad"] == "y" * 10_000 and lines[-1]["level"] == "error"


def test_log_timestamps_read_like_isoformat_in_milliseconds() -> None:
    formatter = JsonFormatter()
    for created in (0.0, 1_796_232_471.9999, 1_796_232_472.0005, 1_700_000_000.123456):
        record = logging.LogRecord("gateway", logging.INFO, __file__, 1, "m", (), None)
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(record))["ts"] == expected


def test_cached_metric_children_count_like_prometheus_own() -> None:
    metrics = Metrics()
    first = metrics.requests.labels("/predict", "POST", "200")
    assert metrics.requests.labels("/predict", "POST", "200") is first
    for _ in range(3):
        metrics.requests.labels("/predict", "POST", "200").inc()
        metrics.request_seconds.labels("/predict", "POST", "200").observe(0.02)
    metrics.rejections.labels("forbidden_url", "loopback").inc()
    text = generate_latest(metrics.registry).decode()
    assert 'gateway_requests_total{method="POST",route="/predict",status="200"} 3.0' in text
    assert (
        'gateway_request_duration_seconds_bucket{le="0.025",method="POST",route="/predict",'
        'status="200"} 3.0' in text
    )
    assert 'gateway_rejections_total{code="forbidden_url",reason="loopback"} 1.0' in text
