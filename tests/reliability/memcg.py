"""A cgroup v1 memory cgroup with a hard limit, as the kubelet sets one for a container.

Created as a child of the cgroup this process is in (root here and in CI), so the limit is
enforced by the kernel's OOM killer exactly as in a pod. A process joins it by running through
`wrapper()`: a two-line shell script that writes its own pid to cgroup.procs and execs the real
program, so every process it forks (gunicorn's workers) is in the cgroup from the start.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")


class CgroupUnavailable(Exception):
    """No writable cgroup v1 memory controller here (the test says why and skips)."""


def own_memory_cgroup(proc_cgroup: Path = Path("/proc/self/cgroup")) -> Path:
    """The directory of this process's cgroup in the v1 memory hierarchy."""
    for line in proc_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return V1_ROOT / path.lstrip("/")
    raise CgroupUnavailable("this process is in no cgroup v1 memory hierarchy")


@dataclass
class MemoryCgroup:
    """One memory cgroup: its limit, its counters, and a wrapper that puts a program in it."""

    path: Path

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> MemoryCgroup:
        """Make the cgroup with `limit_bytes` (no swap); CgroupUnavailable when not possible."""
        if not (V1_ROOT / "memory.limit_in_bytes").is_file():
            raise CgroupUnavailable(f"no cgroup v1 memory controller at {V1_ROOT}")
        if os.geteuid() != 0:
            raise CgroupUnavailable("creating a memory cgroup needs root")
        parent = own_memory_cgroup()
        path = parent / name
        try:
            path.mkdir(exist_ok=True)
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        except OSError as exc:
            raise CgroupUnavailable(f"cannot create {path}: {exc}") from None
        swap = path / "memory.memsw.limit_in_bytes"
        if swap.is_file():  # memory + swap = memory: no swapping out of the limit
            swap.write_text(str(limit_bytes))
        return cls(path)

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    @property
    def limit(self) -> int:
        return int(self.read("memory.limit_in_bytes"))

    @property
    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer killed in this cgroup."""
        fields = dict(line.split() for line in self.read("memory.oom_control").splitlines())
        return int(fields.get("oom_kill", 0))

    @property
    def failcnt(self) -> int:
        """Times usage hit the limit (the kernel then reclaimed, or OOM-killed)."""
        return int(self.read("memory.failcnt"))

    @property
    def max_usage(self) -> int:
        """Highest memory usage seen (bytes, page cache included)."""
        return int(self.read("memory.max_usage_in_bytes"))

    @property
    def pids(self) -> list[int]:
        return [int(p) for p in self.read("cgroup.procs").split()]

    def wrapper(self, program: Path, directory: Path) -> Path:
        """A script in `directory` that joins this cgroup, then execs `program` with its args."""
        script = directory / f"in-{self.path.name}"
        script.write_text(
            f'#!/bin/sh\necho $$ > {self.path / "cgroup.procs"}\nexec {program} "$@"\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return script

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the cgroup once its processes are gone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.2)
