"""The decode memory budget of one worker process, and what decoding an image will cost.

A 131 KB PNG of one colour can claim 40 M pixels, and a 1.5 KB lossless WebP as many: decoded,
they take 190 MiB and 610 MiB. So before any pixel is decoded, the gateway works out from the
header what the decode will hold at its peak (`decode_cost`), refuses formats past their pixel
cap (`pixel_cap`), and reserves that many bytes from the worker's `DecodeBudget`. Concurrent
decodes wait a bounded time for room, then get 503 `decode_busy` with Retry-After: memory stays
bounded by the budget whatever the thread count, and a few costly images cannot take all of it
(`HEAVY_SHARE`), so ordinary photos keep flowing beside them.

The budget per worker is (container memory limit - gunicorn master) / workers - worker baseline;
the limit comes from GATEWAY_MEMORY_LIMIT_BYTES (the Pulumi program passes the container's
limit through the downward API), else the cgroup (v2 memory.max, v1 memory.limit_in_bytes),
else `DEFAULT_MEMORY_LIMIT`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from gateway.contract import ResizeSpec
from gateway.errors import DecodeBusy, ImageTooCostly
from gateway.preprocessing import ORIENTATION_TAG, QUARTER_TURNS

log = logging.getLogger("gateway.budget")

MIB = 1024 * 1024
MPX = 1_000_000
DEFAULT_MEMORY_LIMIT = 768 * MIB  # the gateway container's limit in the Pulumi program today
CGROUP_V2_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a page-rounded 2**63 - 1
# The gunicorn master's RSS (gunicorn, the settings, no app): 45 MiB measured, rounded up.
MASTER_BYTES = 48 * MIB
# Costly decodes together may hold at most this share of the budget; the rest stays free for
# the small reservations of ordinary photos (a JPEG photo with draft decoding needs < 16 MiB).
HEAVY_SHARE = 0.75
SMALL_RESERVATION = 16 * MIB
SLACK_BYTES = 4 * MIB  # codec state, palettes, row buffers, resampling coefficients

# Pixels one image may have, per format, within the global GATEWAY_MAX_IMAGE_PIXELS. The model
# needs 112-299 px a side, so these only decide which large images are worth their decode:
# - JPEG (baseline, and the model allows draft decoding): libjpeg decodes at 1/2..1/8 scale,
#   so a 40 Mpx photo costs a few MiB; the global cap applies.
# - JPEG progressive (libjpeg keeps every DCT coefficient, 2 bytes per sample, whatever the
#   output scale) or decoded in full (the model forbids draft): 16 Mpx, like the formats below.
# - PNG, GIF, BMP decode every pixel (then convert to RGB, 4 bytes a pixel in Pillow): 16 Mpx,
#   a 4000 x 4000 image, bounds the worst (palette + transparency, 9 bytes a pixel) to 140 MiB.
# - WebP goes through libwebp's animation decoder (a canvas and a frame copy besides Pillow's
#   image): 16 bytes a pixel for RGBA, so 8 Mpx bounds it to 125 MiB.
FULL_DECODE_CAP = 16 * MPX
PIXEL_CAPS = {"JPEG": 40 * MPX, "PNG": FULL_DECODE_CAP, "GIF": FULL_DECODE_CAP,
              "BMP": FULL_DECODE_CAP, "WEBP": 8 * MPX}  # fmt: skip

# Bytes per pixel of Pillow's storage for each mode (RGB is stored as 4 bytes, like RGBA).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def pixel_bytes(mode: str) -> int:
    """Bytes per pixel Pillow stores for `mode` (1, 2 or 4)."""
    return _PIXEL_BYTES.get(mode, 4)


def jpeg_draft_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The size libjpeg decodes at for `Image.draft(mode, target)`: the largest 1/1, 1/2, 1/4
    or 1/8 scale that stays at least `target` (Pillow's JpegImagePlugin.draft)."""
    scale = min(size[0] // target[0], size[1] // target[1])
    for denominator in (8, 4, 2, 1):
        if scale >= denominator:
            break
    return math.ceil(size[0] / denominator), math.ceil(size[1] / denominator)


def is_progressive(image: Image.Image) -> bool:
    """Whether a JPEG is progressive (its coefficients are all kept while decoding)."""
    return bool(image.info.get("progressive") or image.info.get("progression"))


def uses_draft(image: Image.Image, spec: ResizeSpec) -> bool:
    """Whether the JPEG will be decoded at a reduced scale (see preprocessing.to_rgb)."""
    return image.format == "JPEG" and spec.jpeg_draft


def pixel_cap(image: Image.Image, spec: ResizeSpec, global_cap: int) -> int:
    """The most pixels an image of this format (and JPEG kind) may have."""
    cap = PIXEL_CAPS.get(image.format or "", FULL_DECODE_CAP)
    if image.format == "JPEG" and (is_progressive(image) or not uses_draft(image, spec)):
        cap = FULL_DECODE_CAP
    return min(cap, global_cap)


def header_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation known from the header; 0 when it can only be known by decoding.

    PngImageFile.getexif() decodes the whole image when no eXIf chunk came before the pixels
    (Pillow's PngImagePlugin), so a PNG without one is assumed possibly rotated.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 0
    return image.getexif().get(ORIENTATION_TAG)


def decode_cost(image: Image.Image, spec: ResizeSpec, encoded_bytes: int) -> int:
    """Peak bytes a worker holds to turn this opened (header-only) image into the model input.

    Mirrors gateway.preprocessing.to_rgb stage by stage; the original image stays alive until
    the end (the caller closes it), each stage adds what it allocates. Checked against
    measurements of the worst images of each format by tests/reliability/decode_cost.py.
    """
    width, height = image.size
    orientation = header_orientation(image)
    if uses_draft(image, spec):
        target = (spec.width, spec.height)
        if orientation in QUARTER_TURNS:
            target = (spec.height, spec.width)
        width, height = jpeg_draft_size((width, height), target)
    pixels = width * height
    held = pixels * pixel_bytes(image.mode)
    if image.format == "WEBP":
        held += pixels * 8  # libwebp's canvas and the frame copy, alive as long as the image
    if image.format == "JPEG" and is_progressive(image):
        components = len(image.getbands())
        held += image.size[0] * image.size[1] * components * 2  # every DCT coefficient
    stages = [0]
    if orientation not in (None, 1):
        stages.append(pixels * pixel_bytes(image.mode))  # exif_transpose's rotated copy
    if image.mode.startswith("I;16"):
        stages.append(pixels * 6)  # numpy's uint16, shifted and uint8 copies; then L and RGB
    rgb = 0 if image.mode == "RGB" else pixels * 4
    if rgb:
        rgba = pixels * 4 if "transparency" in image.info else 0
        stages.append(rgba + rgb)  # convert("RGBA") first when there is transparency
    # the resize: the RGB image (the original itself when it is RGB) plus one resampling pass
    stages.append(rgb + max(spec.width * height, width * spec.height) * 4)
    modelled = encoded_bytes + held + max(stages)
    return modelled + modelled // 20 + SLACK_BYTES  # 5 %: allocator and codec overheads


# glibc's mallopt parameter; a fixed value also turns off its dynamic adjustment (malloc(3)).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 * MIB


def return_freed_images_to_os() -> bool:
    """Make glibc map every allocation >= 1 MiB on its own, so a decoded image's memory goes
    back to the OS when it is freed; True if set (False off glibc).

    By default glibc raises its mmap threshold to the size of the last big block freed (up to
    32 MiB), so Pillow's 16 MiB image blocks then come from per-thread arenas that keep their
    memory: measured, 8 threads decoding 2 at a time left a 327 MiB RSS (peak 416) where the
    same decodes with the fixed threshold left 46 MiB (peak 309), and the worker's RSS drifted
    far past its budget under the cgroup test.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD) failed: freed images may stay in the RSS")
    return ok


def container_memory_limit(
    configured: int, v2: Path = CGROUP_V2_MAX, v1: Path = CGROUP_V1_LIMIT
) -> tuple[int, str]:
    """The container's memory limit and where it came from: the setting, the cgroup, a default."""
    if configured > 0:
        return configured, "GATEWAY_MEMORY_LIMIT_BYTES"
    for path in (v2, v1):
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < UNLIMITED:
            return int(raw), str(path)
    return DEFAULT_MEMORY_LIMIT, "default"


def worker_budget(memory_limit: int, workers: int, worker_baseline: int) -> int:
    """Decode bytes one worker may hold so that master + workers x (baseline + budget) fit."""
    return (memory_limit - MASTER_BYTES) // workers - worker_baseline


def worst_case_bytes(memory_limit: int, workers: int, worker_baseline: int) -> int:
    """The most the gateway's processes hold with every worker's budget in use."""
    return MASTER_BYTES + workers * (
        worker_baseline + worker_budget(memory_limit, workers, worker_baseline)
    )


@dataclass
class Reservation:
    """Bytes held from a budget until released (or resized while held)."""

    budget: DecodeBudget
    nbytes: int = 0

    def resize(self, nbytes: int) -> None:
        """Hold `nbytes` instead: a shrink is immediate, a growth may wait (see `reserve`)."""
        self.budget._resize(self, nbytes)


class DecodeBudget:
    """Bytes of image work one worker process may hold at once; waits are bounded."""

    def __init__(self, capacity: int, wait_seconds: float, retry_after: int) -> None:
        self.capacity = capacity
        self.heavy_capacity = int(capacity * HEAVY_SHARE)
        self.wait_seconds = wait_seconds
        self.retry_after = retry_after
        self.in_use = 0
        self.peak = 0
        self._room = threading.Condition(threading.Lock())

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[Reservation]:
        """Hold `nbytes` for the block: wait for room, else DecodeBusy (or ImageTooCostly)."""
        reservation = Reservation(self)
        try:
            reservation.resize(nbytes)
            yield reservation
        finally:
            reservation.resize(0)

    def _limit_for(self, nbytes: int) -> int:
        return self.capacity if nbytes <= SMALL_RESERVATION else self.heavy_capacity

    def _resize(self, reservation: Reservation, nbytes: int) -> None:
        growth = nbytes - reservation.nbytes
        with self._room:
            if growth <= 0:
                self.in_use += growth
                reservation.nbytes = nbytes
                self._room.notify_all()
                return
            limit = self._limit_for(nbytes)
            if nbytes > limit:
                raise ImageTooCostly(
                    f"decoding this image needs {nbytes / MIB:.0f} MiB; a gateway worker "
                    f"decodes at most {limit / MIB:.0f} MiB at once"
                )
            deadline = time.monotonic() + self.wait_seconds
            while self.in_use + growth > limit:
                left = deadline - time.monotonic()
                if left <= 0 or not self._room.wait(left):
                    if self.in_use + growth <= limit:
                        break
                    raise DecodeBusy(
                        f"the gateway is decoding other large images ({self.in_use / MIB:.0f} of "
                        f"{self.capacity / MIB:.0f} MiB in use); retry in {self.retry_after} s",
                        retry_after=self.retry_after,
                    )
            self.in_use += growth
            self.peak = max(self.peak, self.in_use)
            reservation.nbytes = nbytes
