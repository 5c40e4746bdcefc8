"""Checked image loading: allow-list, pixel cap before decoding, orientation, every mode."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from gateway.contract import ResizeSpec
from gateway.errors import (
    GatewayError,
    ImageTooLarge,
    TooManyPixels,
    UndecodableImage,
    UnsupportedImageFormat,
)
from gateway.images import load_model_input, open_checked
from gateway.preprocessing import to_model_input, to_rgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from tests.gateway.support import COLOURS, image_bytes

SPEC = ResizeSpec(32, 32, "bilinear")
LIMITS = {"max_bytes": 5_000_000, "max_pixels": 40_000_000}


def load(data: bytes, spec: ResizeSpec = SPEC, **limits: int) -> np.ndarray:
    merged = {**LIMITS, **limits}
    return load_model_input(
        data, spec, max_bytes=merged["max_bytes"], max_pixels=merged["max_pixels"]
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height RGB pixels but carries almost no data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def photo_bytes() -> bytes:
    """A JPEG with real structure (gradients), larger than the model input."""
    y, x = np.mgrid[0:300, 0:400]
    array = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("jpeg_draft", [False, True])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
def test_same_pixels_as_the_training_preprocessing(interpolation: str, jpeg_draft: bool) -> None:
    spec = ResizeSpec(48, 40, interpolation, jpeg_draft)
    data = photo_bytes()
    array = load(data, spec)
    assert array.dtype == np.uint8 and array.shape == (48, 40, 3)
    np.testing.assert_array_equal(array, to_model_input(data, spec))


def test_jpeg_draft_decodes_at_reduced_scale() -> None:
    data = photo_bytes()
    with_draft = load(data, ResizeSpec(32, 32, "bilinear", True))
    without = load(data, ResizeSpec(32, 32, "bilinear", False))
    assert not np.array_equal(with_draft, without)  # draft changed the decoded pixels
    assert np.abs(with_draft.astype(int) - without.astype(int)).mean() < 20  # same picture


def jpeg_of_size(width: int, height: int, orientation: int = 1) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", exif=exif.tobytes(), quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("target", "decoded"),
    [
        ((112, 112), (200, 267)),
        ((64, 64), (100, 134)),
        ((40, 40), (50, 67)),
        ((300, 300), (400, 533)),
    ],
)
def test_jpeg_draft_decodes_at_the_smallest_scale_not_below_the_target(
    target: tuple[int, int], decoded: tuple[int, int]
) -> None:
    # the dataset's typical 400x533 photo: libjpeg can scale by 1/2, 1/4 or 1/8
    image = Image.open(io.BytesIO(jpeg_of_size(400, 533)))
    rgb = to_rgb(image, ResizeSpec(target[1], target[0], "bilinear", jpeg_draft=True))
    assert rgb.size == decoded


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_jpeg_draft_of_a_rotated_photo_never_goes_below_the_target(orientation: int) -> None:
    # stored 400 wide x 200 high, upright 200 wide x 400 high; the target is 100 x 200 upright
    # (width x height). Drafting on the stored axes without the swap would decode 100x50.
    image = Image.open(io.BytesIO(jpeg_of_size(400, 200, orientation)))
    rgb = to_rgb(image, ResizeSpec(200, 100, "bilinear", jpeg_draft=True))
    assert rgb.size == (100, 200)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_in_place_matches_pillows_exif_transpose(orientation: int) -> None:
    data = jpeg_of_size(48, 32, orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    actual = np.asarray(to_rgb(Image.open(io.BytesIO(data)), ResizeSpec(8, 8)))
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGBA"), ("PNG", "LA"),
        ("PNG", "P"), ("PNG", "1"), ("PNG", "I;16"), ("WEBP", "RGBA"), ("GIF", "P"),
        ("BMP", "RGB"), ("BMP", "1"),
    ],
)  # fmt: skip
def test_every_mode_becomes_rgb(fmt: str, mode: str) -> None:
    array = load(image_bytes(fmt, COLOURS["green"], mode=mode))
    assert array.dtype == np.uint8 and array.shape == (32, 32, 3)


def test_sixteen_bit_greyscale_keeps_its_brightness() -> None:
    image = Image.frombytes("I;16", (8, 8), np.full((8, 8), 32768, dtype="<u2").tobytes())
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    array = load(buffer.getvalue(), ResizeSpec(8, 8))
    assert np.all(array == 128)


def test_a_transparent_palette_image_keeps_its_opaque_colour() -> None:
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, *COLOURS["blue"]] + [0] * 762)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    array = load(buffer.getvalue(), ResizeSpec(16, 16))
    assert tuple(array[0, 0]) == COLOURS["blue"]


def test_exif_orientation_is_applied() -> None:
    # 40 wide x 20 high: left half red, right half blue; orientation 6 means "rotate 90 CW"
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = COLOURS["red"]
    array[:, 20:] = COLOURS["blue"]
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    upright = load(buffer.getvalue(), ResizeSpec(40, 20))  # 20 wide x 40 high once rotated
    assert upright.shape == (40, 20, 3)
    top, bottom = upright[5, 10].astype(int), upright[35, 10].astype(int)
    assert top[0] > 150 and top[2] < 100  # red on top after a clockwise turn
    assert bottom[2] > 150 and bottom[0] < 100


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), COLOURS[c]).convert("P") for c in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    array = load(buffer.getvalue(), ResizeSpec(16, 16))
    assert array[8, 8, 0] > 150 and array[8, 8, 2] < 100


@pytest.mark.parametrize("size", [(9000, 9000), (100_000, 100_000)])
def test_pixel_bombs_are_refused_before_decoding(size: tuple[int, int]) -> None:
    # 81 Mpx is under Pillow's own limit (our cap catches it); 10 Gpx trips Pillow's check
    data = png_header_only(*size)
    assert len(data) < 200
    with pytest.raises(TooManyPixels):
        load(data)


def test_pixel_cap_is_configurable() -> None:
    data = image_bytes("PNG", size=(200, 100))
    assert load(data, max_pixels=20_000).shape == (32, 32, 3)
    with pytest.raises(TooManyPixels, match="200x100"):
        load(data, max_pixels=19_999)


def test_an_image_one_byte_over_the_limit_is_too_large() -> None:
    data = image_bytes("PNG")
    with pytest.raises(ImageTooLarge):
        load(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", UndecodableImage),
        (b"hello, I am text", UnsupportedImageFormat),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", UnsupportedImageFormat),
        (image_bytes("TIFF"), UnsupportedImageFormat),
        (image_bytes("JPEG", size=(300, 200))[:400], UndecodableImage),
        (image_bytes("PNG", size=(300, 200))[:100], UndecodableImage),
    ],
    ids=["empty", "text", "svg", "tiff", "truncated-jpeg", "truncated-png"],
)
def test_non_images_and_broken_images_get_their_own_error(
    data: bytes, error: type[GatewayError]
) -> None:
    with pytest.raises(error):
        load(data)


def test_open_checked_reads_only_the_header() -> None:
    image = open_checked(png_header_only(5000, 4000), max_pixels=20_000_000)
    assert image.size == (5000, 4000)  # opened (header only) without decoding 60 MB


SEEDS = [image_bytes(fmt, COLOURS["red"], size=(24, 16)) for fmt in ("JPEG", "PNG", "GIF", "BMP")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10_000),
)
def test_corrupted_images_fail_only_with_gateway_errors(
    seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    try:
        array = load(bytes(data[: max(1, len(data) - cut % len(data))]))
    except GatewayError:
        return
    assert array.shape == (32, 32, 3)
