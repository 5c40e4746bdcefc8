"""Pure image preprocessing: bytes in, uint8 arrays out.

The demo model is trained on arrays produced by `to_model_input`, so the gateway and the
training pipeline resize photos the same way (no training/serving skew).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from gateway.contract import INTERPOLATIONS, ResizeSpec

# The contract's interpolation names are Pillow's filter names in lower case.
RESAMPLING = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}
ORIENTATION_TAG = 0x0112
QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def decode_rgb(data: bytes, spec: ResizeSpec) -> Image.Image:
    """Decode image bytes to an RGB image with EXIF orientation applied (first frame only)."""
    return to_rgb(Image.open(io.BytesIO(data)), spec)


def to_rgb(image: Image.Image, spec: ResizeSpec) -> Image.Image:
    """Decode an opened (not yet loaded) image to RGB with EXIF orientation applied.

    `image` itself is transposed in place; use the returned image.
    """
    if spec.jpeg_draft and image.format == "JPEG":
        # libjpeg's scaled IDCT decodes at 1/2, 1/4 or 1/8 scale, never below the target
        # size, for a fraction of a full decode; the filtered resize does the rest.
        width, height = spec.width, spec.height
        if image.getexif().get(ORIENTATION_TAG) in QUARTER_TURNS:
            width, height = height, width
        image.draft("RGB", (width, height))
    ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of upright photos
    if image.mode.startswith("I;16"):
        # 16-bit greyscale: keep the high byte (Pillow's own conversion would clip at 255)
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    if image.mode != "RGB":
        image = image.convert("RGBA") if "transparency" in image.info else image
        image = image.convert("RGB")
    return image


def resize_to_array(image: Image.Image, spec: ResizeSpec) -> np.ndarray:
    """Resize an RGB image to the model's input size and return a uint8 HxWx3 array."""
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), RESAMPLING[spec.interpolation])
    return np.asarray(image, dtype=np.uint8)


def to_model_input(data: bytes, spec: ResizeSpec) -> np.ndarray:
    """Turn encoded image bytes into the uint8 HxWx3 array the model expects."""
    return resize_to_array(decode_rgb(data, spec), spec)
