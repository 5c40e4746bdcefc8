"""The worst *valid* images per format: small on the wire, huge or slow to decode.

Only the standard library and Pillow, so the decode-cost child processes can import this module
from `.venv-gateway`. PNG and BMP are written by hand (fast, no 40 Mpx image in memory); WebP,
GIF and JPEG are encoded by Pillow from a one-colour image and cached under build/bombs/.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

CACHE = Path(__file__).resolve().parents[2] / "build" / "bombs"
# The image: 6000 x 6600 = 39.6 Mpx, inside the 40 Mpx header cap.
BOMB_SIZE = (6000, 6600)
ORIENTATION_TAG = 0x0112


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # a quarter turn: the decoder's output is copied once more
    return exif.tobytes()


def png(
    size: tuple[int, int] = BOMB_SIZE,
    colour_type: int = 0,
    *,
    transparent: bool = False,
    rotated: bool = False,
) -> bytes:
    """A one-colour 8-bit PNG (colour type 0 grey, 2 RGB, 3 palette, 6 RGBA), tRNS/eXIf optional."""
    width, height = size
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + width * channels)  # filter byte, then the row
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if colour_type == 3:
        chunks.append(_chunk(b"PLTE", b"\x80\x40\x20" * 2))
    if transparent:
        chunks.append(_chunk(b"tRNS", b"\x00\x01" if colour_type == 0 else b"\x00"))
    if rotated:
        chunks.append(_chunk(b"eXIf", _exif_rotated().removeprefix(b"Exif\x00\x00")))
    chunks += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def bmp_rle8(size: tuple[int, int] = BOMB_SIZE) -> bytes:
    """An 8-bit run-length-encoded BMP of one colour: 2 bytes per 255 pixels."""
    width, height = size
    runs = [bytes((255, 1))] * (width // 255)
    if width % 255:
        runs.append(bytes((width % 255, 1)))
    line = b"".join(runs) + b"\x00\x00"  # end of line
    pixels = line * height + b"\x00\x01"  # end of bitmap
    palette = b"\x20\x40\x80\x00" * 256
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def bmp_1bit(size: tuple[int, int]) -> bytes:
    """An uncompressed 1-bit BMP: 8 pixels per byte, so 10 MiB hold 84 Mpx."""
    width, height = size
    stride = ((width + 31) // 32) * 4
    pixels = b"\x00" * (stride * height)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 1, 0, len(pixels), 2835, 2835, 2, 0)
    palette = b"\x00\x00\x00\x00\xff\xff\xff\x00"
    offset = 14 + len(info) + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def header_only(fmt: str, size: tuple[int, int]) -> bytes:
    """A header claiming `size` with (almost) no pixel data: refused before decoding or 422."""
    width, height = size
    if fmt == "PNG":
        ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    if fmt == "GIF":
        return (
            b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00" + b"\x00" * 6
            + b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00;"
        )  # fmt: skip
    if fmt == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
        return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + b"\x00" * 16
    raise ValueError(fmt)


def _encoded(name: str, make: Callable[[], bytes]) -> bytes:
    path = CACHE / name
    if path.is_file():
        return path.read_bytes()
    data = make()
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_bytes(data)
    partial.replace(path)
    return data


def _save(mode: str, size: tuple[int, int], fmt: str, **options: object) -> Callable[[], bytes]:
    def make() -> bytes:
        buffer = io.BytesIO()
        Image.new(mode, size, 1 if mode in ("P", "L") else (32, 64, 128, 128)[: len(mode)]).save(
            buffer, fmt, **options
        )
        return buffer.getvalue()

    return make


def webp(size: tuple[int, int] = BOMB_SIZE, mode: str = "RGBA") -> bytes:
    """A lossless one-colour WebP (RGBA keeps the alpha channel through decoding)."""
    w, h = size
    return _encoded(f"webp-{mode}-{w}x{h}.webp", _save(mode, size, "WEBP", lossless=True))


def gif(size: tuple[int, int] = BOMB_SIZE) -> bytes:
    """A one-colour palette GIF."""
    w, h = size
    return _encoded(f"gif-{w}x{h}.gif", _save("P", size, "GIF"))


def jpeg(size: tuple[int, int] = BOMB_SIZE, *, progressive: bool = False) -> bytes:
    """A one-colour JPEG, baseline or progressive (progressive keeps every coefficient)."""
    w, h = size
    kind = "progressive" if progressive else "baseline"
    make = _save("RGB", size, "JPEG", quality=90, progressive=progressive, subsampling=0)
    return _encoded(f"jpeg-{kind}-{w}x{h}.jpg", make)


@dataclass(frozen=True)
class Bomb:
    """One worst-case image: a name for tables and how to make its bytes."""

    name: str
    fmt: str
    make: Callable[[], bytes]


def worst_cases(size: tuple[int, int] = BOMB_SIZE) -> list[Bomb]:
    """The worst valid image of each format and decoding path, at `size` pixels."""
    return [
        Bomb("PNG grey", "PNG", lambda: png(size, 0)),
        Bomb("PNG RGBA, EXIF rotated", "PNG", lambda: png(size, 6, rotated=True)),
        Bomb("PNG palette + tRNS", "PNG", lambda: png(size, 3, transparent=True)),
        Bomb("WebP lossless RGBA", "WEBP", lambda: webp(size)),
        Bomb("GIF", "GIF", lambda: gif(size)),
        Bomb("BMP RLE8", "BMP", lambda: bmp_rle8(size)),
        Bomb("JPEG baseline", "JPEG", lambda: jpeg(size)),
        Bomb("JPEG progressive", "JPEG", lambda: jpeg(size, progressive=True)),
    ]
