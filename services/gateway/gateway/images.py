"""Untrusted image bytes to model input: format allow-list and pixel caps, then preprocessing.

The checks happen after `Image.open` has read only the header and before any pixel is decoded,
so a small file that claims billions of pixels is refused without allocating them; then the
decode's peak memory, worked out from the same header, is reserved from the worker's decode
budget (gateway.budget) before decoding.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from gateway.budget import Reservation, decode_cost, pixel_cap
from gateway.contract import ResizeSpec
from gateway.errors import (
    ImageTooLarge,
    TooManyPixels,
    UndecodableImage,
    UnsupportedImageFormat,
)
from gateway.preprocessing import resize_to_array, to_rgb

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
ALLOWED_NAMES = "JPEG, PNG, WebP, GIF or BMP"

# What a broken or hostile file makes Pillow's decoders raise.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, zlib.error)


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open image bytes (header only) and refuse other formats and too many pixels."""
    if not data:
        raise UndecodableImage("the image is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(f"the image has too many pixels ({exc})") from None
    except UnidentifiedImageError:
        raise UnsupportedImageFormat(f"the data is not a {ALLOWED_NAMES} image") from None
    except _DECODE_ERRORS as exc:
        raise UndecodableImage(f"the image header cannot be read: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixels(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if width < 1 or height < 1:
        raise UndecodableImage(f"the image has no pixels ({width}x{height})")
    return image


def check_format_cap(image: Image.Image, spec: ResizeSpec, max_pixels: int) -> None:
    """Refuse an image over its format's pixel cap (gateway.budget.PIXEL_CAPS)."""
    width, height = image.size
    cap = pixel_cap(image, spec, max_pixels)
    if width * height > cap:
        kind = f"{image.format} images"
        if image.format == "JPEG" and cap < max_pixels:
            kind = "progressive JPEGs" if image.info.get("progressive") else "full-size JPEGs"
        raise TooManyPixels(
            f"the image is {width}x{height} = {width * height} pixels; {kind} may have at "
            f"most {cap} pixels (decoding costs memory for every pixel)"
        )


def load_model_input(
    data: bytes,
    spec: ResizeSpec,
    *,
    max_bytes: int,
    max_pixels: int,
    reservation: Reservation | None = None,
) -> np.ndarray:
    """Check and decode untrusted image bytes into the model's uint8 HxWx3 array.

    With a `reservation`, it is resized to the decode's peak memory before decoding (waiting
    for room in its budget, or raising DecodeBusy / ImageTooCostly); the caller releases it.
    """
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {max_bytes}")
    image = open_checked(data, max_pixels)
    try:
        check_format_cap(image, spec, max_pixels)
        if reservation is not None:
            reservation.resize(decode_cost(image, spec, len(data)))
        return resize_to_array(to_rgb(image, spec), spec)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(f"the image has too many pixels ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise UndecodableImage(f"the {image.format} image cannot be decoded: {exc}") from None
    finally:
        image.close()
