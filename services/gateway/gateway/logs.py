"""Structured logs: one JSON object per line on stdout.

A few dozen lines of our own instead of a logging library: the stdlib does the work and we only
need its `extra` fields serialised, cheaply, since every request writes a line.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import sys
import time
from typing import IO, Any

# attributes every LogRecord has; anything else came in through `extra=`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}
# A write of at most this many bytes to a pipe is atomic (POSIX), so concurrent lines never mix.
_ATOMIC_BYTES = select.PIPE_BUF


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line with its `extra` fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds, as datetime.isoformat(timespec="milliseconds")."""
        second = int(created)
        if second != self._second:  # a benign race: both threads compute the same text
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class LineHandler(logging.StreamHandler[IO[str]]):
    """Writes each record as one line with one `write(2)`, without the handler's lock.

    Handler.handle takes a lock around every emit, which request threads contend for; a line
    up to PIPE_BUF bytes written in one call is atomic on a pipe or an O_APPEND file, so the
    lock adds nothing. Longer lines (tracebacks) and streams without a file descriptor go
    through the locked, buffered path."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        try:
            self._fd: int | None = self.stream.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fd = None

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            if self._fd is None or len(line) > _ATOMIC_BYTES:
                with self.lock:  # type: ignore[union-attr]
                    self.stream.flush()
                    self.stream.write(line.decode("utf-8"))
                    self.stream.flush()
                return
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
        except Exception:
            self.handleError(record)


def configure_logging(level: str) -> None:
    """Send the gateway's logs to stdout as JSON lines (idempotent)."""
    logger = logging.getLogger("gateway")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_gateway_json", False) for h in logger.handlers):
        handler = LineHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        handler._gateway_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
