"""The total time budget of a download, enforced by shutting its socket down when it runs out.

Socket timeouts bound each wait for data, not a whole exchange: a host that drips one byte
per second, or a DNS lookup or TLS handshake that stalls, would hold a worker thread for as long
as it likes. A `Deadline` covers one download (lookup, connects, redirects, headers and
body); one shared `Watchdog` thread fires each deadline when it passes by shutting the socket
then attached, which wakes the blocked read with an error that `gateway.fetch` reports as
`DownloadTimeout`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time

from gateway.errors import DownloadTimeout


class Deadline:
    """The total time budget of one download: when it runs out, the live socket is shut."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._fired = False
        self._finished = False

    def __enter__(self) -> Deadline:
        WATCHDOG.watch(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._finished = True
            self._sock = None

    @property
    def finished(self) -> bool:
        """Whether the download is over (the watchdog has nothing left to do for it)."""
        return self._finished

    @property
    def ends(self) -> float:
        """When the budget runs out (time.monotonic)."""
        return self._ends

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._ends - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the budget is spent."""
        return self._fired or self.remaining() <= 0

    def raise_if_fired(self) -> None:
        """Raise DownloadTimeout if the watchdog has run out the budget."""
        if self._fired:
            raise DownloadTimeout(f"the download did not finish within {self._seconds:g} s")

    def attach(self, sock: socket.socket | None) -> None:
        """Watch `sock` (the connected socket) until `detach`."""
        with self._lock:
            self.raise_if_fired()
            self._sock = sock

    def detach(self) -> None:
        """Stop watching the socket (it is about to be closed)."""
        with self._lock:
            self._sock = None

    def fire(self) -> None:
        """Spend the budget: shut the watched socket so a blocked read wakes up."""
        with self._lock:
            if self._finished:
                return
            self._fired = True
            if self._sock is not None:
                # The base-class shutdown works on TLS sockets too and wakes a blocked read.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


class Watchdog:
    """One thread that fires every download's deadline when it passes.

    A `threading.Timer` per download cost a thread start and join per request (3-8 % of the
    gateway's busy CPU under load); one thread sleeping until the earliest deadline does not.
    Finished downloads leave the heap when they reach its top (at the next `watch`, or when
    the thread wakes), and the thread is woken only for a deadline earlier than the one it
    sleeps until: under steady load it wakes about once per download timeout, not once per
    download.
    """

    def __init__(self) -> None:
        self._reset()
        # a forked worker inherits the heap but not the thread: start afresh there
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._wakeup = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._sleeping_until = math.inf  # what the thread waits for (guarded by _wakeup)

    def watch(self, deadline: Deadline) -> None:
        """Fire `deadline` when its time comes, unless it has finished by then."""
        with self._wakeup:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="gateway-download-watchdog", daemon=True
                )
                self._thread.start()
            self._drop_finished()
            heapq.heappush(self._heap, (deadline.ends, next(self._order), deadline))
            if deadline.ends < self._sleeping_until:
                self._wakeup.notify()

    def _drop_finished(self) -> None:
        """Pop finished downloads off the top of the heap (the caller holds the lock)."""
        while self._heap and self._heap[0][2].finished:
            heapq.heappop(self._heap)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while True:
                    self._drop_finished()
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._sleeping_until = self._heap[0][0] if self._heap else math.inf
                    self._wakeup.wait(self._sleeping_until - now if self._heap else None)
                self._sleeping_until = -math.inf  # awake: watch() need not notify
                _, _, due = heapq.heappop(self._heap)
            due.fire()


WATCHDOG = Watchdog()
