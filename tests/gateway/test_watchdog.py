"""The download watchdog keeps no finished downloads around and still fires on time."""

from __future__ import annotations

import socket
import threading
import time

from gateway.deadline import Deadline, Watchdog


def test_finished_downloads_leave_the_heap_instead_of_waking_the_thread_later() -> None:
    watchdog = Watchdog()
    for _ in range(1000):
        deadline = Deadline(30.0)
        watchdog.watch(deadline)
        deadline.__exit__(None, None, None)
    assert len(watchdog._heap) <= 1  # only the last one, finished after its watch


def test_a_short_deadline_behind_long_ones_still_shuts_its_socket_in_time() -> None:
    watchdog = Watchdog()
    long_ones = [Deadline(30.0) for _ in range(50)]
    for deadline in long_ones:
        watchdog.watch(deadline)
    server, client = socket.socketpair()
    short = Deadline(0.3)
    watchdog.watch(short)
    short.attach(client)
    started = time.monotonic()
    woke = threading.Event()

    def read() -> None:
        client.recv(1)  # blocks until the watchdog shuts the socket down
        woke.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert woke.wait(5.0)
        assert 0.25 <= time.monotonic() - started < 3.0
        assert short.expired
    finally:
        server.close()
        client.close()
        for deadline in long_ones:
            deadline.__exit__(None, None, None)
