"""Request ids for requests that come without one: unique, cheap, not secret.

`uuid.uuid4()` reads 16 bytes from the kernel for every request (a syscall that showed in the
gateway's profile under load). A request id only has to be unique and traceable, not
unpredictable, so each process draws one random 64-bit prefix (again after a fork, so gunicorn
workers differ) and counts: 32 lowercase hex digits, like `uuid4().hex`.
"""

from __future__ import annotations

import itertools
import os
import secrets


class RequestIds:
    """Generates `<16 hex random per process><16 hex counter>` ids; safe across threads."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()  # next() on a count is atomic under the GIL

    def new(self) -> str:
        """A fresh id."""
        return f"{self._prefix}{next(self._counter) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


new_request_id = RequestIds().new
