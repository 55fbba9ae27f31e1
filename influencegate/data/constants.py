"""Normalisation constants and file conventions shared by every data source.

All means/stds are per channel, in units of pixel intensity scaled to [0, 1].
"""
from __future__ import annotations

# Global mean/std of scikit-learn's digits after dividing the 0..16 pixel values by 16
# (computed once over all 1,797 x 64 pixels).
DIGITS_MEAN: tuple[float] = (0.30526,)
DIGITS_STD: tuple[float] = (0.37605,)

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

# Grayscale folders/manifests weight the CIFAR-10 statistics like PIL's "L" conversion (ITU-R 601-2);
# the std is the same weighted sum, an approximation (exact only for fully correlated channels).
CIFAR10_GRAY_MEAN: tuple[float] = (0.299 * 0.4914 + 0.587 * 0.4822 + 0.114 * 0.4465,)
CIFAR10_GRAY_STD: tuple[float] = (0.299 * 0.2470 + 0.587 * 0.2435 + 0.114 * 0.2616,)

DEFAULT_IMAGE_SIZE = 32
DEFAULT_CHANNELS = 3
#: The channel counts a dataset can be loaded with (grey or colour).
CHANNELS = (1, 3)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
MANIFEST_EXTENSIONS = frozenset({".csv", ".parquet", ".jsonl"})

#: The per-row column that says how many frames the image file holds (1: a still image; more: an animation or
#: a multi-page TIFF, whose first frame is the one used); filled by the loader, reserved in manifests.
FRAMES_COLUMN = "frames"

# Folders/manifests with more files than this show a progress bar while decoding.
PROGRESS_MIN_FILES = 200
