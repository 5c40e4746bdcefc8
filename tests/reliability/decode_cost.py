"""Worst-case memory and CPU of one request's decode, per format, next to the budget's estimate.

    python -m tests.reliability.decode_cost        (writes build/reliability/decode-cost.json)

Each worst image (tests/reliability/bombs.py) at its format's pixel cap and at 40 Mpx goes
through the gateway's own `load_model_input` (the demo model's 112x112 bilinear resize with
JPEG draft) in a fresh `.venv-gateway` process with the workers' malloc setting; the figures
are that process's peak RSS growth (VmHWM) and CPU time, and `gateway.budget.decode_cost`,
what the worker reserves for it. Only the standard library and Pillow at import time: the
child processes import this module from `.venv-gateway`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.reliability import bombs

REPO = Path(__file__).resolve().parents[2]
GATEWAY_PYTHON = REPO / ".venv-gateway" / "bin" / "python"
FIGURES = REPO / "build" / "reliability"
CAP = (4000, 4000)  # 16 Mpx: PNG, GIF, BMP, progressive JPEG
WEBP_CAP = (2828, 2828)  # 8 Mpx
PHOTOS = REPO.parent / "shared" / "clothing-dataset-small" / "validation"


Case = tuple[str, tuple[int, int], dict[str, Any]]


def cases() -> dict[str, Case]:
    """name -> (bombs function, size, options): each format's worst at its cap and at 40 Mpx."""
    big = bombs.BOMB_SIZE
    photo_case: dict[str, Case] = {}
    if PHOTOS.is_dir():
        photo_case["a real photo (validation set)"] = ("photo", (0, 0), {})
    return photo_case | {
        "PNG grey 16 Mpx": ("png", CAP, {"colour_type": 0}),
        "PNG RGBA + EXIF rotation 16 Mpx": ("png", CAP, {"colour_type": 6, "rotated": True}),
        "PNG palette + tRNS 16 Mpx": ("png", CAP, {"colour_type": 3, "transparent": True}),
        "PNG grey 40 Mpx (the issue's)": ("png", big, {"colour_type": 0}),
        "WebP lossless RGBA 8 Mpx": ("webp", WEBP_CAP, {}),
        "WebP lossless RGBA 40 Mpx": ("webp", big, {}),
        "GIF 16 Mpx": ("gif", CAP, {}),
        "GIF 40 Mpx": ("gif", big, {}),
        "BMP RLE8 16 Mpx": ("bmp_rle8", CAP, {}),
        "BMP RLE8 40 Mpx": ("bmp_rle8", big, {}),
        "JPEG progressive 16 Mpx": ("jpeg", CAP, {"progressive": True}),
        "JPEG progressive 40 Mpx": ("jpeg", big, {"progressive": True}),
        "JPEG baseline 40 Mpx": ("jpeg", big, {}),
    }


def photo() -> bytes:
    """The first validation photo of the dataset (for comparison with the bombs)."""
    return next(iter(sorted(PHOTOS.glob("*/*.jpg")))).read_bytes()


def child(name: str) -> dict[str, Any]:
    """Run in a fresh .venv-gateway process: decode one case, report its cost."""
    import io
    import resource
    import time

    from gateway.budget import decode_cost, return_freed_images_to_os
    from gateway.contract import ResizeSpec
    from gateway.errors import GatewayError
    from gateway.images import load_model_input
    from PIL import Image

    return_freed_images_to_os()
    Image.init()  # import every plugin now: a worker has done it at its first WebP or GIF
    function, size, options = cases()[name]
    data: bytes = photo() if function == "photo" else getattr(bombs, function)(size, **options)
    spec = ResizeSpec(112, 112, "bilinear", True)
    with Image.open(io.BytesIO(data)) as header:
        estimate = decode_cost(header, spec, len(data))
        mode = header.mode
        pixels = header.size[0] * header.size[1]
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve from the parent (a big pytest
    # process would hide the decode); "5" to clear_refs resets VmHWM to the current RSS.
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = _status_kib("VmRSS")
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        load_model_input(data, spec, max_bytes=10 << 20, max_pixels=40_000_000)
        outcome = "decoded"
    except GatewayError as exc:
        outcome = f"{exc.status} {exc.code}"
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "case": name,
        "bytes": len(data),
        "pixels": pixels,
        "mode": mode,
        "outcome": outcome,
        "peak_rss_growth_mib": round((_status_kib("VmHWM") - rss_before) / 1024, 1),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3),
        "wall_s": round(time.perf_counter() - started, 3),
        "reserved_mib": round(estimate / 2**20, 1),
    }


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Every case (or the named ones), each in its own .venv-gateway process."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'services' / 'gateway'}"}
    rows = []
    for name in names or list(cases()):
        done = subprocess.run(
            [str(GATEWAY_PYTHON), "-m", "tests.reliability.decode_cost", "--child", name],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        rows.append(json.loads(done.stdout))
    return rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1])))
        return 0
    rows = measure()
    FIGURES.mkdir(parents=True, exist_ok=True)
    target = FIGURES / "decode-cost.json"
    partial = target.with_suffix(".json.part")
    figures = {"rows": rows, "load": os.getloadavg()}
    partial.write_text(json.dumps(figures, indent=2))
    partial.replace(target)
    for row in rows:
        print(
            f"{row['case']:34s} {row['bytes']:>9} B {row['outcome']:28s} "
            f"peak +{row['peak_rss_growth_mib']:6.1f} MiB (reserved {row['reserved_mib']:6.1f}) "
            f"cpu {row['cpu_s']:.3f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
