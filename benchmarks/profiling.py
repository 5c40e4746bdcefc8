"""py-spy samples of a running process, summed up per function (self and total time)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


# Leaf frames where a thread waits (for a lock, a socket, a queue, an answer) rather than
# computes; py-spy's --nonblocking mode cannot tell idle threads apart, so they are set aside.
WAITING = frozenset(
    {
        "Condition.wait",
        "Condition.__enter__",
        "Event.wait",
        "Thread.join",
        "_UnaryUnaryMultiCallable._blocking",
        "EpollSelector.select",
        "PollSelector.select",
        "_PollLikeSelector.select",
        "SocketIO.readinto",
        "socket.accept",
        "_worker",
        "_serve",
    }
)
# Frames every request passes through (thread pools, gunicorn, Flask's dispatch): left out of
# the inclusive table, which is about where the work is.
PLUMBING = ("threading.py", "concurrent/futures/", "gunicorn/", "flask/app.py", "selectors.py")


@dataclass(frozen=True)
class Profile:
    """Sample counts of the busy samples: per function on top (self) and anywhere (total)."""

    samples: int
    busy: int
    self_counts: Counter[str]
    total_counts: Counter[str]

    def table(self, top: int = 12) -> str:
        """The busiest functions, as Markdown."""
        if not self.busy:
            return "(no busy samples)"
        share = 100 / self.busy
        lines = [
            f"{self.busy} of {self.samples} samples were busy (not waiting); shares are of those.",
            "",
            "| function | self % | total % |",
            "| --- | --- | --- |",
        ]
        inclusive = [
            (name, count)
            for name, count in self.total_counts.most_common()
            if not any(marker in name for marker in PLUMBING)
        ]
        for name, count in inclusive[:top]:
            own = self.self_counts.get(name, 0)
            lines.append(f"| `{name}` | {own * share:.1f} | {count * share:.1f} |")
        lines += ["", "Most self time: " + "; ".join(
            f"`{name}` {count * share:.1f} %" for name, count in self.self_counts.most_common(top)
        )]  # fmt: skip
        return "\n".join(lines)


def record(pid: int, seconds: float, out: Path, rate: int = 50) -> Profile:
    """Sample `pid` (and its subprocesses) with py-spy for `seconds` without pausing it."""
    # `uv run` puts .venv/bin on PATH; `.venv/bin/python -m benchmarks` does not
    binary = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if binary is None:
        raise RuntimeError("py-spy is not installed (it is in the bench dependency group)")
    command = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--nonblocking",
        "--subprocesses",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    subprocess.run(command, capture_output=True, timeout=seconds + 60, check=True)
    return parse(out.read_text("utf-8", errors="replace"))


def _short(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "services/gateway/", "services/devserver/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['function']} ({file})"


def parse(collapsed: str) -> Profile:
    """Read py-spy's raw (collapsed stack) output."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = busy = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        if frames[-1].split(" (")[0] in WAITING:
            continue
        busy += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    return Profile(samples, busy, self_counts, total_counts)


def profile_under_load(
    gateway_pid: int,
    model_server_pid: int,
    load: Callable[[float], object],
    seconds: float,
    work: Path,
) -> str:
    """py-spy on the gateway (all workers) and on the model server while `load` runs."""
    work.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, Profile] = {}
    failures: list[str] = []

    def sample(name: str, pid: int) -> None:
        try:
            profiles[name] = record(pid, seconds, work / f"{name.replace(' ', '-')}.txt")
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            failures.append(f"{name}: {exc}")

    loader = threading.Thread(target=load, args=(seconds + 3,))
    loader.start()
    time.sleep(1.5)
    samplers = [
        threading.Thread(target=sample, args=("gateway", gateway_pid)),
        threading.Thread(target=sample, args=("model server", model_server_pid)),
    ]
    for thread in samplers:
        thread.start()
    for thread in [*samplers, loader]:
        thread.join()
    parts = []
    for name in ("gateway", "model server"):
        if name in profiles:
            parts += [f"### {name} ({profiles[name].samples} samples)", "", profiles[name].table()]
            parts.append("")
    parts += [f"- profiling failed: {failure}" for failure in failures]
    return "\n".join(parts)
