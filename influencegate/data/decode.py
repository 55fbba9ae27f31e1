"""Decoding one image file into a fixed-size tensor, with a short human reason when it fails."""
from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from influencegate.data import storage

# 8-bit modes PIL converts to "RGB"/"L" without losing range; 16-bit and float modes ("I;16", "I", "F")
# would be clipped to 255 by PIL, so they are reported instead of silently saturated.
_SUPPORTED_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
#: What shows through transparent pixels: white, as a page or a web page would show them.
ALPHA_BACKGROUND = (255, 255, 255, 255)


class SampleError(Exception):
    """A single sample cannot be used; ``str(error)`` is the short reason stored in the ``error`` column."""


class Decoded(NamedTuple):
    """A decoded image: ``pixels`` uint8 channels x size x size; ``frames`` the frame count of the file (1 for a
    still image; an animated GIF/WebP/PNG or a multi-page TIFF has more, and only its first frame is used)."""

    pixels: np.ndarray
    frames: int


def read_bytes(location: str) -> bytes:
    """The raw bytes of a local path or URL; raises SampleError("missing file" / "unreadable file: ...")."""
    try:
        return storage.read_bytes(location)
    except FileNotFoundError:
        raise SampleError("missing file") from None
    except (OSError, ValueError) as exc:  # ValueError: storage.StorageError, a path with a NUL byte
        raise SampleError(f"unreadable file: {getattr(exc, 'strerror', None) or exc}") from None


def decode_image(data: bytes, image_size: int, channels: int) -> Decoded:
    """Decode encoded image bytes, convert to ``channels`` (1 = grayscale "L", 3 = "RGB") and resize.

    The image is first turned upright by its EXIF orientation, transparent images are composited on white
    (``ALPHA_BACKGROUND``), and animations give their first frame (their frame count is returned, read from
    the file's frame index without decoding the other frames); then it is resized (squashed, not cropped) to
    image_size x image_size with bilinear filtering.
    Returns ``Decoded``: pixels, a uint8 array channels x image_size x image_size (values 0..255, not yet
    normalised; a numpy array rather than a tensor, so that DataLoader workers hand it over as plain bytes),
    and the frame count.
    Raises SampleError with a short reason for unreadable files and unsupported modes.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            frames = int(getattr(image, "n_frames", 1))
            if image.mode not in _SUPPORTED_MODES:
                raise SampleError(f"unsupported image mode {image.mode!r} (expected an 8-bit image)")
            upright = ImageOps.exif_transpose(image)
            if upright.mode in _ALPHA_MODES or (upright.mode == "P" and "transparency" in upright.info):
                rgba = upright.convert("RGBA")
                upright = Image.alpha_composite(Image.new("RGBA", rgba.size, ALPHA_BACKGROUND), rgba)
            converted = upright.convert("L" if channels == 1 else "RGB")
            resized = converted.resize((image_size, image_size), Image.Resampling.BILINEAR)
    except SampleError:
        raise
    except UnidentifiedImageError:
        raise SampleError("unreadable image: cannot identify image file") from None
    except Image.DecompressionBombError as exc:
        raise SampleError(f"image too large: {exc}") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
        raise SampleError(f"unreadable image: {exc}") from None
    pixels = np.asarray(resized, dtype=np.uint8).reshape(image_size, image_size, channels)
    return Decoded(np.ascontiguousarray(pixels.transpose(2, 0, 1)), frames)
