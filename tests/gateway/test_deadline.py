"""gateway.deadline: one watchdog thread wakes a blocked read when a download's time is up."""

from __future__ import annotations

import socket
import time

import pytest
from gateway.deadline import Deadline
from gateway.errors import DownloadTimeout


def test_a_read_blocked_past_the_deadline_is_woken_and_reported_as_a_timeout() -> None:
    ours, host = socket.socketpair()  # the host never sends anything
    with ours, host, Deadline(0.2) as deadline:
        deadline.attach(ours)
        started = time.monotonic()
        assert ours.recv(1) == b""  # the shut socket reads as end of stream
        assert 0.1 < time.monotonic() - started < 5
        assert deadline.expired
        with pytest.raises(DownloadTimeout, match=r"did not finish within 0\.2 s"):
            deadline.raise_if_fired()


def test_a_finished_download_is_not_fired_later() -> None:
    ours, host = socket.socketpair()
    with ours, host:
        with Deadline(0.05) as deadline:
            deadline.attach(ours)
            deadline.detach()
        time.sleep(0.2)  # past the deadline: the watchdog skips it
        host.sendall(b"x")
        assert ours.recv(1) == b"x"
        deadline.raise_if_fired()


def test_attaching_after_the_deadline_fired_raises() -> None:
    with Deadline(0.01) as deadline:
        time.sleep(0.2)
        assert deadline.remaining() == 0
        with pytest.raises(DownloadTimeout):
            deadline.attach(None)


def test_earlier_deadlines_fire_first_whatever_the_order_they_were_set() -> None:
    with Deadline(5) as late, Deadline(0.1) as early:
        time.sleep(0.4)
        assert early.expired and not late.expired
