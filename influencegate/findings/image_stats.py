"""Encoder-free image statistics, cleanvision-like, computed one block of images at a time.

Per image, from its pixels in [0, 1] (C = 1 grey or C = 3 RGB, any H x W >= 3 x 3), `STATISTICS`:
  brightness       mean of the grey image (ITU-R 601 luma for 3 channels), intensity units [0, 1];
  contrast         standard deviation of the grey pixels, intensity units [0, 0.5];
  clipped          the larger of the shares of grey pixels at black (<= 1/255) and at white (>= 254/255);
  entropy          Shannon entropy of the grey histogram over HIST_BINS equal bins of [0, 1], bits [0, log2 bins];
  log_sharpness    log(var(Laplacian) / var(grey) + EPS): high-frequency energy of the contrast-normalised
                   image, log(20) for white noise, log(EPS) for a constant or a very blurred image;
  log_hf_energy    log(var(Laplacian) + HF_EPS): the same energy in intensity^2 units (noise high, blank and
                   blur low);
  colourfulness    Hasler & Suesstrunk: sqrt(var(rg) + var(yb)) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2),
                   rg = R - G, yb = (R + G) / 2 - B; 0 for a grey image;
  channel_corr     mean Pearson correlation of the three channel pairs over the pixels: near 1 for photos and
                   grey images, near 0 for independent per-channel noise; 0 where a channel is constant,
                   1 for a 1-channel image.
The Laplacian is the 4-neighbour one on the interior pixels. Memory: one block of float64 pixels at a time.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

STATISTICS = ("brightness", "contrast", "clipped", "entropy", "log_sharpness", "log_hf_energy", "colourfulness",
              "channel_corr")
LUMA = (0.299, 0.587, 0.114)
HIST_BINS = 32
#: added inside the logs (of the variance ratio; of var(Laplacian), intensity^2): a constant image stays finite
EPS = 1e-3
HF_EPS = 1e-6
#: images per block when statistics are streamed over a dataset
BLOCK = 1024


def channel_weights(c: int) -> np.ndarray:
    """The C weights of the grey image: the luma for C = 3, the channel for C = 1, else the mean."""
    return np.asarray(LUMA) if c == 3 else np.full(c, 1.0 / c)


def grey(x: np.ndarray) -> np.ndarray:
    """B x H x W grey image of B x C x H x W pixels (channel_weights), in x's float type."""
    return x[:, 0] if x.shape[1] == 1 else np.tensordot(channel_weights(x.shape[1]).astype(x.dtype), x, axes=([0], [1]))


def laplacian(g: np.ndarray) -> np.ndarray:
    """B x (H - 2) x (W - 2) 4-neighbour Laplacian of B x H x W images (interior pixels)."""
    return g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * g[:, 1:-1, 1:-1]


def entropy_bits(g: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """B entropies (bits) of the histograms of B x H x W values in [0, 1] over `bins` equal bins."""
    flat = g.reshape(len(g), -1)
    which = np.minimum((np.clip(flat, 0, 1) * bins).astype(np.int64), bins - 1)
    counts = np.bincount((which + bins * np.arange(len(g))[:, None]).ravel(), minlength=bins * len(g))
    p = counts.reshape(len(g), bins) / flat.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)


def channel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(channel means B x C, channel covariances B x C x C over the pixels), float64, of B x C x H x W pixels:
    one centred copy, then one product per channel pair."""
    flat = x.reshape(len(x), x.shape[1], -1)
    mu = flat.mean(axis=2)
    centred = flat - mu[:, :, None]
    cov = np.empty((len(x), x.shape[1], x.shape[1]))
    for i in range(x.shape[1]):
        for j in range(i, x.shape[1]):
            cov[:, i, j] = cov[:, j, i] = np.einsum("bp,bp->b", centred[:, i], centred[:, j]) / flat.shape[2]
    return mu.astype(np.float64), cov


def colour_statistics(mu: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colourfulness, channel_corr) of B images with 3 channels from their channel_moments (module docstring):
    rg and yb are linear in the channels, so their means and variances are w . mu and w^T cov w."""
    rg, yb = np.array([1.0, -1.0, 0.0]), np.array([0.5, 0.5, -1.0])
    spread = np.einsum("i,bij,j->b", rg, cov, rg) + np.einsum("i,bij,j->b", yb, cov, yb)
    colourful = np.sqrt(np.maximum(spread, 0.0)) + 0.3 * np.sqrt((mu @ rg) ** 2 + (mu @ yb) ** 2)
    var = np.diagonal(cov, axis1=1, axis2=2)
    pairs = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        denom = np.sqrt(np.maximum(var[:, i] * var[:, j], 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            pairs.append(np.where(denom > 0, cov[:, i, j] / denom, 0.0))
    return colourful, np.mean(pairs, axis=0)


def image_statistics(pixels: np.ndarray, first: int | np.ndarray = 0) -> pd.DataFrame:
    """STATISTICS of B x C x H x W pixels in [0, 1] (H, W >= 3; C = 1 or 3 gives the colour columns their
    grey values), one row per image, computed in float32 with float64 moments; every value finite. A
    non-finite pixel is a ValueError naming the image (first: the position of pixels[0] in the dataset, or
    int B: each image's)."""
    x = np.asarray(pixels, dtype=np.float32)
    if x.ndim != 4 or min(x.shape[2:]) < 3:
        raise ValueError(f"image statistics need B x C x H x W pixels with H, W >= 3, got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))
    if len(bad):
        where = first + int(bad[0]) if np.ndim(first) == 0 else int(first[bad[0]])
        raise ValueError(f"image statistics: {len(bad)} images have non-finite pixels (NaN or inf), the first "
                         f"at position {where}")
    mu, cov = channel_moments(x)
    w = channel_weights(x.shape[1])
    var = np.maximum(np.einsum("i,bij,j->b", w, cov, w), 0.0)
    g = grey(x)
    flat = g.reshape(len(g), -1)
    lap_var = laplacian(g).reshape(len(g), -1).var(axis=1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(var > 0, lap_var / var, 0.0)
    if x.shape[1] == 3:
        colourful, corr = colour_statistics(mu, cov)
    else:
        colourful, corr = np.zeros(len(x)), np.ones(len(x))
    return pd.DataFrame({
        "brightness": mu @ w, "contrast": np.sqrt(var),
        "clipped": np.maximum((flat <= 1 / 255).mean(axis=1), (flat >= 254 / 255).mean(axis=1)),
        "entropy": entropy_bits(g), "log_sharpness": np.log(ratio + EPS), "log_hf_energy": np.log(lap_var + HF_EPS),
        "colourfulness": colourful, "channel_corr": corr})


def as_pixels(block: torch.Tensor | np.ndarray, mean: Sequence[float] | None,
              std: Sequence[float] | None) -> np.ndarray:
    """One block of images (B x C x H x W, normalised by the C-vectors mean/std, or already pixels when either
    is None) as float32 pixels clipped to [0, 1]."""
    x = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        x = x * np.asarray(std, dtype=np.float32).reshape(shape) + np.asarray(mean, dtype=np.float32).reshape(shape)
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


class StatisticsStream:
    """image_statistics of a dataset's images given a block at a time, in order (`add`), by whichever pass reads
    them: stream_statistics, or the duplicate index's streaming pass (duplicate_links.stream_index), so that the
    pixels are read once for both findings. mean/std: the C-vectors that normalised the images (as_pixels)."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        self.mean, self.std = mean, std
        self._parts: list[pd.DataFrame] = []
        self.count = 0

    def add(self, block: torch.Tensor | np.ndarray) -> None:
        """The statistics of the next B x C x H x W images (rows count .. count + B - 1 of the dataset)."""
        self._parts.append(image_statistics(as_pixels(block, self.mean, self.std), first=self.count))
        self.count += len(self._parts[-1])

    def table(self) -> pd.DataFrame:
        """count x len(STATISTICS): the statistics of every image added, in order."""
        if not self._parts:
            return pd.DataFrame(columns=list(STATISTICS), dtype=float)
        return pd.concat(self._parts, ignore_index=True)


def stream_statistics(images: torch.Tensor | np.ndarray, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None, block: int = BLOCK) -> pd.DataFrame:
    """image_statistics of M x C x H x W images (an array, a tensor or an array-like view such as
    data.store.ImageArray whose slices are read on demand), `block` images at a time: never all as floats."""
    if len(images.shape) != 4:
        raise ValueError(f"images must be M x C x H x W, got shape {tuple(images.shape)}")
    stream = StatisticsStream(mean, std)
    for s in range(0, len(images), block):
        stream.add(images[s:s + block])
    return stream.table()


def appended_statistics(images: torch.Tensor | np.ndarray, kept: np.ndarray, new: np.ndarray,
                        mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                        block: int = BLOCK) -> pd.DataFrame:
    """image_statistics of M images of which only the `new` ones (bool M) are read, `block` at a time; the
    others keep `kept` (M x len(STATISTICS), the previous version's statistics of the same samples)."""
    out = np.array(kept, dtype=np.float64)
    rows = np.flatnonzero(new)
    for s in range(0, len(rows), block):
        part = rows[s:s + block]
        out[part] = image_statistics(as_pixels(images[part], mean, std), first=part)[list(STATISTICS)].to_numpy()
    return pd.DataFrame(out, columns=list(STATISTICS))
