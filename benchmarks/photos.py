"""The real photos the benchmarks use, and a loopback HTTP server that hands them out."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.config import REPO, BenchError
from clothing_tools.local_stack import free_port, stop


@dataclass(frozen=True)
class Photo:
    """One photo of the dataset: its path relative to the dataset root and its bytes."""

    relative: str
    data: bytes


def load_photos(dataset: Path, count: int) -> list[Photo]:
    """`count` photos spread evenly over every class of the validation and train splits."""
    splits = [dataset / "validation", dataset / "train"]
    if not splits[0].is_dir():
        raise BenchError(f"the dataset is not at {dataset} (expected validation/ and train/)")
    by_class: dict[str, list[Path]] = {}
    for split in splits:
        for class_dir in sorted(p for p in split.glob("*") if p.is_dir()):
            by_class.setdefault(class_dir.name, []).extend(sorted(class_dir.glob("*.jpg")))
    # round-robin over the classes so any prefix of the list is balanced
    chosen: list[Path] = []
    queues = [list(paths) for _, paths in sorted(by_class.items())]
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    if len(chosen) < count:
        raise BenchError(f"only {len(chosen)} photos under {dataset}; {count} wanted")
    return [Photo(p.relative_to(dataset).as_posix(), p.read_bytes()) for p in chosen]


@dataclass(frozen=True)
class PhotoServer:
    """The running photo server: its base URL and process id."""

    url: str
    pid: int


@contextmanager
def photo_server(dataset: Path, log: Path) -> Iterator[PhotoServer]:
    """benchmarks/photo_server.py over the dataset on 127.0.0.1, in its own process so its CPU
    is not the benchmark runner's."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.photo_server", str(port), str(dataset)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    with urllib.request.urlopen(url + "/", timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise BenchError(f"the photo server did not start (see {log})") from None
                    time.sleep(0.05)
            yield PhotoServer(url, process.pid)
        finally:
            stop(process, grace=5)
