"""Faults on a local stack of its own, under load (bounded loops, loopback only): the model
server killed with SIGKILL and brought back, a gunicorn worker killed, the gateway stopped with
SIGTERM while requests are in flight. Figures go to build/reliability/faults.json."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from clothing_tools.local_stack import Running, free_port, start_gateway, start_model_server
from tests.gateway.support import wait_until
from tests.reliability.hostile import HostileHost
from tests.reliability.load import Load, Sample, latency_figures
from tests.reliability.support import GATEWAY_ENV, SLACK, record_figures

pytestmark = pytest.mark.slow
MODEL_TIMEOUT = 5
RETRY_AFTER = "2"
THREADS = 4  # gunicorn threads per worker
LOAD_THREADS = 6  # concurrent clients, each on its own keep-alive connection
FAULT_ENV = {
    **GATEWAY_ENV,
    "GATEWAY_MODEL_TIMEOUT_SECONDS": str(MODEL_TIMEOUT),
    "GATEWAY_RETRY_AFTER_SECONDS": RETRY_AFTER,
    "GATEWAY_ALLOW_PRIVATE_URLS": "true",
    "GATEWAY_THREADS": str(THREADS),
    "GATEWAY_GRACEFUL_TIMEOUT_SECONDS": "20",
}
GoodCall = Callable[[str], Callable[[], requests.Response]]
_figures: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def write_figures() -> Iterator[None]:
    yield
    if _figures:
        record_figures("faults", _figures)


def gateway_on(grpc_target: str, logs: Path, name: str) -> AbstractContextManager[Running]:
    return start_gateway(
        tf_serving_host=grpc_target, port=free_port(), env=FAULT_ENV, log=logs / f"{name}.log"
    )


def statuses(samples: list[Sample]) -> dict[str, int]:
    return dict(Counter(str(s.status) + (f" {s.code}" if s.code else "") for s in samples))


def test_model_server_killed_then_back(model_base: Path, logs: Path, good_upload: GoodCall) -> None:
    """SIGKILL the model server under load: 503 with Retry-After or 504 within the deadline,
    never 500, no stuck worker; back to 200 on its own once the model server returns."""
    grpc_port, rest_port = free_port(), free_port()

    def model_server() -> AbstractContextManager[Running]:
        return start_model_server(
            model_base, grpc_port=grpc_port, rest_port=rest_port, python=sys.executable,
            log=logs / "fault-model-server.log",
        )  # fmt: skip

    with model_server() as first, gateway_on(first.grpc_target, logs, "fault-gateway") as gateway:
        with Load(good_upload(gateway.url), threads=3) as load:
            time.sleep(3)
            steady = load.since(0)
            assert steady and all(s.status == 200 for s in steady), statuses(steady)
            killed_at = time.monotonic()
            first.process.kill()
            first.process.wait()
            time.sleep(MODEL_TIMEOUT + 2)
            health = requests.get(f"{gateway.url}/healthz", timeout=5)
            assert health.status_code == 200  # the workers are not stuck behind the model
            restart_at = time.monotonic()
            with model_server():
                back_at = time.monotonic()

                def settled() -> bool:
                    # every worker's channel reconnects on its own backoff: wait for a quiet
                    # 3 s window with only 200s
                    recent = load.since(time.monotonic() - 3)
                    return time.monotonic() - back_at > 3 and all(s.status == 200 for s in recent)

                wait_until(settled, 150)
                late = [s for s in load.since(back_at) if s.status != 200]
                first_ok = min(
                    s.started + s.seconds for s in load.since(back_at) if s.status == 200
                )
                recovered_at = max((s.started + s.seconds for s in late), default=back_at)
                time.sleep(3)
                load.stop()
                after = load.since(recovered_at)
        outage = [s for s in load.since(killed_at) if s.started < back_at]
        in_flight = [s for s in load.samples if s.started < killed_at < s.started + s.seconds]

    assert outage
    for sample in outage + in_flight:
        assert sample.status in (200, 503, 504), sample
        assert sample.seconds < MODEL_TIMEOUT + SLACK, sample
        if sample.status == 503:
            assert (sample.code, sample.retry_after) == ("model_unavailable", RETRY_AFTER)
        if sample.status == 504:
            assert sample.code == "model_timeout"
    assert after and all(s.status == 200 for s in after), statuses(after)
    _figures["model_server_killed"] = {
        "requests_during_outage": len(outage),
        "outage_answers": statuses(outage),
        "slowest_outage_answer_s": round(max(s.seconds for s in outage), 2),
        "model_server_down_s": round(back_at - killed_at, 1),
        "model_server_restart_s": round(back_at - restart_at, 1),
        "first_200_after_model_back_s": round(first_ok - back_at, 2),
        "all_200_after_model_back_s": round(recovered_at - back_at, 2),
        "requests_after_recovery": len(after),
        "server_errors_500": sum(s.status == 500 for s in load.samples),
    }


def test_a_killed_worker_loses_at_most_its_requests_in_flight(
    model_server: Running, logs: Path, good_upload: GoodCall
) -> None:
    with gateway_on(model_server.grpc_target, logs, "worker-kill-gateway") as gateway:
        master = psutil.Process(gateway.process.pid)
        workers = master.children()
        assert len(workers) == 2
        with Load(good_upload(gateway.url), threads=LOAD_THREADS) as load:
            time.sleep(3)
            killed_at = time.monotonic()
            os.kill(workers[0].pid, signal.SIGKILL)
            wait_until(lambda: len(master.children()) == 2 and workers[0] not in master.children(),
                       30)  # fmt: skip
            replaced_at = time.monotonic()
            time.sleep(3)
            load.stop()
        failed = [s for s in load.samples if s.status != 200]
    # only requests already in flight on the killed worker may fail, and only by losing the
    # connection; everything started after the kill succeeds. A gthread worker accepts
    # keep-alive connections beyond its thread count, so up to one request per client
    # connection can be in flight there, never more.
    assert len(failed) <= LOAD_THREADS, statuses(failed)
    assert all(s.started <= killed_at and s.status == 0 for s in failed), failed
    assert all(s.status == 200 for s in load.since(killed_at))
    _figures["worker_killed"] = {
        "requests": len(load.samples),
        "failed": len(failed),
        "failed_how": sorted({s.error or str(s.status) for s in failed}),
        "worker_replaced_s": round(replaced_at - killed_at, 2),
        "latency_after_kill": latency_figures(load.since(killed_at)),
    }


def test_sigterm_drains_requests_in_flight(
    model_server: Running, logs: Path, hostile_host: HostileHost
) -> None:
    """Downloads that take 1.2 s are in flight when the gateway gets SIGTERM: all of them finish
    with 200, then the gateway exits 0 and stops listening."""
    url = hostile_host.url("/slow.jpg")
    with gateway_on(model_server.grpc_target, logs, "drain-gateway") as gateway:
        seen_before = hostile_host.seen.count("/slow.jpg")

        def classify(_: int) -> requests.Response:
            return requests.post(f"{gateway.url}/predict", json={"url": url}, timeout=60)

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(classify, i) for i in range(6)]
            wait_until(lambda: hostile_host.seen.count("/slow.jpg") - seen_before == 6, 20)
            signalled_at = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        drained_at = time.monotonic()
        exit_code = gateway.process.wait(30)
        exited_at = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{gateway.url}/healthz", timeout=5)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert exit_code == 0
    _figures["sigterm_drain"] = {
        "in_flight": len(answers),
        "completed": sum(a.status_code == 200 for a in answers),
        "drain_s": round(drained_at - signalled_at, 2),
        "exit_s": round(exited_at - signalled_at, 2),
        "exit_code": exit_code,
    }
