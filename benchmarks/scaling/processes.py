"""Starting the image host and reading a gunicorn tree's memory: shared by the scaling tools."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.config import REPO, BenchError
from clothing_tools.local_stack import stop


@dataclass(frozen=True)
class ImageHostProcess:
    """A running benchmarks.scaling.image_host: base URL and pid."""

    url: str
    pid: int


@contextmanager
def image_host(
    root: Path, address: str, port: int, median_ms: float, sigma: float, log: Path
) -> Iterator[ImageHostProcess]:
    """The image host in its own process (its CPU is not the gateway's)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "benchmarks.scaling.image_host", f"--address={address}",
        f"--port={port}", f"--root={root}", f"--median-ms={median_ms}", f"--sigma={sigma}",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://{address}:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(url + "/LICENSE", timeout=5):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise BenchError(f"the image host did not start (see {log})") from None
                    time.sleep(0.1)
            yield ImageHostProcess(url, process.pid)
        finally:
            stop(process, grace=5)


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (a pod's working set, roughly)."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for member in members:
        try:
            total += int(member.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return total
