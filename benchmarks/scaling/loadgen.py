"""Open-loop load: `python -m benchmarks.scaling.loadgen URL BODIES PROFILE OUT`.

Requests start on schedule whatever the answers do (users do not wait for each other), at a
rate following PROFILE, a JSON list of [seconds, requests per second] points joined by straight
lines. Each request is a new TCP connection (`Connection: close`) so the load balancer in
front, like an NLB, balances connections over the gateways. One line per request goes to OUT:
`start latency_seconds outcome body version top`: start in time.monotonic() seconds
(system-wide on Linux, so the harness can place it on its own clock); outcome an HTTP status or
`connect`, `reset`, `timeout`; body the index of the body sent (a line of BODIES); version and
top the answer's `model.version` and top class, `-` when the answer has none (so the harness can
check every answer's label against the photo). SIGTERM stops sending; answers still due are
awaited and written. asyncio in its own process, so its CPU is not the harness's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

TIMEOUT_SECONDS = 30.0


class Record(NamedTuple):
    """One line of OUT."""

    start: float
    latency: float
    outcome: str
    body: int
    version: str
    top: str


def parse(line: str) -> Record:
    """A line of OUT as a Record."""
    start, latency, outcome, body, version, top = line.split()
    return Record(float(start), float(latency), outcome, int(body), version, top)


def rate_at(profile: Sequence[tuple[float, float]], t: float) -> float:
    """The offered rate at `t` seconds, linear between the profile's points."""
    if t <= profile[0][0]:
        return profile[0][1]
    for (t0, r0), (t1, r1) in itertools.pairwise(profile):
        if t0 <= t <= t1:
            return r0 + (r1 - r0) * (t - t0) / (t1 - t0) if t1 > t0 else r1
    return profile[-1][1]


def answer_fields(payload: bytes) -> tuple[str, str]:
    """(model.version, top) of a /predict answer, `-` for what it lacks."""
    try:
        answer = json.loads(payload)
        return str(answer["model"]["version"]), str(answer["top"]).replace(" ", "_")
    except (ValueError, KeyError, TypeError):
        return "-", "-"


async def _one(host: str, port: int, path: str, body: bytes) -> tuple[str, str, str]:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return "connect", "-", "-"
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            return "reset", "-", "-"
        rest = await reader.read()  # until the server closes
        version, top = answer_fields(rest.partition(b"\r\n\r\n")[2])
        return status_line.split(b" ", 2)[1].decode(), version, top
    except (ConnectionError, IndexError):
        return "reset", "-", "-"
    finally:
        writer.close()


async def run(url: str, bodies: list[bytes], profile: list[tuple[float, float]], out: Path) -> None:
    """Send requests on schedule until the profile ends; write one line per request."""
    hostport, _, rest = url.removeprefix("http://").partition("/")
    host, port = hostport.split(":")
    path = "/" + rest
    duration = profile[-1][0]
    started = time.monotonic()
    lines: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def request(index: int) -> None:
        begin = time.monotonic()
        body = index % len(bodies)
        try:
            outcome, version, top = await asyncio.wait_for(
                _one(host, int(port), path, bodies[body]), TIMEOUT_SECONDS
            )
        except TimeoutError:
            outcome, version, top = "timeout", "-", "-"
        lines.append(
            f"{begin:.4f} {time.monotonic() - begin:.4f} {outcome} {body} {version} {top}\n"
        )

    # SIGTERM ends the schedule early; requests in flight still finish and are written
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    index = 0
    next_at = 0.0
    with out.open("w") as sink:
        while next_at < duration and not stopping.is_set():
            delay = started + next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(request(index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            index += 1
            rate = max(rate_at(profile, next_at), 0.5)
            next_at += 1.0 / rate
            if len(lines) > 200:
                sink.writelines(lines)
                lines.clear()
                sink.flush()
        if tasks:
            await asyncio.wait(tasks)
        sink.writelines(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 4:
        print("usage: python -m benchmarks.scaling.loadgen URL BODIES PROFILE OUT", file=sys.stderr)
        return 2
    url, bodies_path, profile_path, out = args
    bodies = [line.encode() for line in Path(bodies_path).read_text().splitlines() if line]
    profile = [(float(t), float(r)) for t, r in json.loads(Path(profile_path).read_text())]
    asyncio.run(run(url, bodies, profile, Path(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
