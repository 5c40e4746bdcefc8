"""Result rows, the printed table and docs/benchmarks.md (written atomically)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.config import REPO


@dataclass(frozen=True)
class Target:
    """A goal on the ratio ours/baseline: `<=` or `>=` a limit."""

    op: str
    limit: float

    def met(self, ratio: float) -> bool:
        """Whether the ratio reaches the goal."""
        return ratio <= self.limit if self.op == "<=" else ratio >= self.limit

    def __str__(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {self.limit:.3g}"


@dataclass(frozen=True)
class Row:
    """One measured figure, optionally beside its baseline, with the ratio ours/baseline."""

    bench: str
    what: str
    ours: float
    unit: str
    baseline: float | None = None
    target: Target | None = None
    digits: int = 2

    @property
    def ratio(self) -> float | None:
        """ours / baseline, or None without a baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    @property
    def verdict(self) -> str:
        """'yes', 'NO' or '' (no target)."""
        ratio = self.ratio
        if self.target is None or ratio is None:
            return ""
        return "yes" if self.target.met(ratio) else "NO"

    def cells(self) -> list[str]:
        """The row as table cells."""
        ratio = self.ratio
        return [
            self.bench,
            self.what,
            f"{_number(self.ours, self.digits)} {self.unit}".strip(),
            "" if self.baseline is None else f"{_number(self.baseline, self.digits)} {self.unit}",
            "" if ratio is None else f"{ratio:.4g}",
            "" if self.target is None else str(self.target),
            self.verdict,
        ]


@dataclass
class Section:
    """The rows of one benchmark, what it compares, its notes and whether it failed."""

    bench: str
    title: str
    method: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def add(
        self,
        what: str,
        ours: float,
        unit: str,
        baseline: float | None = None,
        target: Target | None = None,
        digits: int = 2,
    ) -> Row:
        """Append a row of this benchmark."""
        row = Row(self.bench, what, ours, unit, baseline, target, digits)
        self.rows.append(row)
        return row


HEADERS = ["", "measure", "ours", "baseline", "ratio", "target", "met"]


def _number(value: float, digits: int) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def text_table(sections: Sequence[Section]) -> str:
    """Every row of every section as an aligned plain-text table."""
    rows = [HEADERS]
    for section in sections:
        if section.error:
            rows.append([section.bench, f"FAILED: {section.error}", "", "", "", "", ""])
        rows += [row.cells() for row in section.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: Sequence[Row], *, bench: bool = False) -> str:
    """Rows as a GitHub Markdown table (with the benchmark column when `bench`)."""
    first = 0 if bench else 1
    headers = ["", *HEADERS[1:]][first:]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for row in rows:
        cells = row.cells()[first:]
        cells[-1] = {"yes": "✅", "NO": "❌ no"}.get(cells[-1], "")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def shortfall(row: Row) -> str:
    """How far a missed target is from being met, in words."""
    ratio, target = row.ratio, row.target
    if ratio is None or target is None or target.met(ratio):
        return ""
    if target.op == "<=":
        return f"{ratio / target.limit - 1:.2%} over the limit"
    return f"{1 - ratio / target.limit:.2%} short of it"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        total_kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{total_kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs",
        "memory": memory,
        "system": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "load average at start": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": _git("rev-parse", "--short", "HEAD"),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def markdown(
    sections: Sequence[Section],
    *,
    started: dt.datetime,
    seconds: float,
    command: str,
    host: dict[str, str],
    setup: dict[str, str],
    appendix: str = "",
) -> str:
    """The whole docs/benchmarks.md."""
    targeted = [row for s in sections for row in s.rows if row.target is not None]
    out = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (the `benchmarks/` package) on "
        f"{started:%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} minutes; every run rewrites this "
        "file. Each comparison ran side by side in that same run and is given as the ratio "
        "ours / baseline, because absolute times on shared machines drift.",
        "",
        "## Machine and setup",
        "",
        *[f"- {key}: {value}" for key, value in {**host, **setup}.items() if value],
        "",
        "## Summary",
        "",
        markdown_table(targeted, bench=True),
        "",
        *[
            f"- missed: {row.bench} {row.what}: ratio {row.ratio:.4g} against {row.target}, "
            f"{shortfall(row)}"
            for row in targeted
            if shortfall(row)
        ],
        *[f"- {s.bench} failed: {s.error}" for s in sections if s.error],
        "",
    ]
    for section in sections:
        out += [f"## {section.bench}: {section.title}", "", section.method, ""]
        if section.error:
            out += [f"**This benchmark failed:** {section.error}", ""]
        if section.rows:
            out += [markdown_table(section.rows), ""]
        out += [f"- {note}" for note in section.notes]
        if section.notes:
            out.append("")
    if appendix:
        out += [appendix.rstrip(), ""]
    return "\n".join(out)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
