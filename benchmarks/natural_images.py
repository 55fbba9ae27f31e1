"""A natural-image evaluation set for near-duplicates, built offline (issue 14 item 3).

Sources (everything ships inside packages; nothing is downloaded):
  * photos: scikit-image's bundled natural/scientific photos (skimage.data, PHOTOS) and scikit-learn's two
    sample photos (china, flower), RGB in [0, 1] (grey photos repeated over 3 channels);
  * digits: scikit-learn's 1,797 8 x 8 digits (grey, [0, 1]), a resolution of their own;
  * LFW faces are NOT included: sklearn.datasets.fetch_lfw_people needs a download (not in this offline
    environment's cache).

Patches: every photo is cut into non-overlapping side x side patches (side in SIDES = 32, 64, 128, 224) at
the photo's own resolution (photos whose short side is below 2 * side + 3 margins are first upscaled to just
that, only at 224 px), on a grid with a margin of 10% of the side around every patch, so that a shifted copy
can be cut from the photo itself (a real shift brings new content in; no fill). Patches whose grey standard
deviation is below MIN_STD (flat sky, blank page) are dropped: their copies and unrelated flat patches are
indistinguishable by content, so they measure nothing about a matcher. At most MAX_PATCHES per photo and side.

Planted copies, at the patch's own resolution, of a random COPY_SHARE of the originals, each original getting
copies of COPIES_PER_ORIGINAL distinct families (FAMILIES; the seed drives which and how strong):
  shift       the window moved by 1 px up to 10% of the side (each axis, random sign), cut from the photo;
              digits: moved by 1 px with zero fill (10% of 8 px rounds to 1);
  crop        a random window of 75-95% of the side, resized back (bilinear or bicubic);
  jpeg        JPEG re-encoding at quality 30-90 (PIL);
  resize      resized by a factor in [0.5, 0.8] or [1.25, 2.0], then back to the side (random filter);
  brightness  x * contrast + brightness, contrast in [0.8, 1.2], brightness in [-0.1, 0.1], clipped to [0, 1];
  border      a constant-colour border of 4-10% of the side on every side (the content resized to fit);
  watermark   a text ("(c) stock" / "sample" / a number) drawn at a random place, font height ~1/6 of the
              side, opacity 0.5-0.8;
  flip        horizontal mirror (the finding matches it only with ImageMatch(flip=True); off by default).

Split (stated; the matcher's settings were chosen on TUNE only):
  TUNE     photos TUNE_PHOTOS at sides TUNE_SIDES (32 and 128 px), seed 0;
  HELD-OUT photos HELD_OUT_PHOTOS (disjoint from TUNE_PHOTOS) at every side (32, 64, 128, 224: 64 and 224
           were never looked at while tuning), seed 1, and the digits (seed 1).

Pure numpy/PIL/scikit-image; used by benchmarks/duplicates_natural.py and benchmarks/findings_scale.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIDES = (32, 64, 128, 224)
FAMILIES = ("shift", "crop", "jpeg", "resize", "brightness", "border", "watermark", "flip")
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "brick", "grass", "gravel",
          "clock", "page", "text", "hubble_deep_field", "immunohistochemistry", "retina", "cell", "horse")
TUNE_PHOTOS = ("astronaut", "coffee", "rocket", "moon", "grass", "clock", "text", "retina", "china")
HELD_OUT_PHOTOS = ("camera", "chelsea", "coins", "brick", "gravel", "page", "hubble_deep_field",
                   "immunohistochemistry", "cell", "flower")
TUNE_SIDES = (32, 128)
#: A second tuning set with fine texture (session 15): photos outside both splits (skimage's cat fur and the
#: left stereo motorcycle) and a synthetic star field (STARS_SEED: points on a faint smooth background, the
#: fine-point texture no tuning photo had); TUNE_SIDES only, tuning seeds only.
TEXTURE_TUNE_PHOTOS = ("cat", "stereo_motorcycle", "stars")
STARS_SEED = 15
MIN_STD = 0.04
MAX_PATCHES = 60
COPY_SHARE = 0.6
COPIES_PER_ORIGINAL = 2
MARGIN = 0.1


@dataclass
class EvalSet:
    """images: N x 3 x side x side float32 in [0, 1]; group: N int (an original and its copies share it);
    family: N str ("original" or the copy's family); source: N str (photo name or "digits"); amount: N float,
    the copy's strength as a fraction of the side (shift: the larger of |dy|, |dx|; crop: the window side;
    border: the border width; 0 for originals and the other families)."""

    images: np.ndarray
    group: np.ndarray
    family: np.ndarray
    source: np.ndarray
    side: int
    amount: np.ndarray

    def subset(self, keep: np.ndarray) -> "EvalSet":
        """The rows where keep (bool N) is true."""
        return EvalSet(self.images[keep], self.group[keep], self.family[keep], self.source[keep], self.side,
                       self.amount[keep])


def load_photo(name: str) -> np.ndarray:
    """H x W x 3 float64 in [0, 1] of a skimage.data photo or sklearn sample image ("china", "flower")."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        img = load_sample_image(f"{name}.jpg")
    elif name == "stars":
        img = star_field()
    elif name == "stereo_motorcycle":
        import skimage.data
        img = skimage.data.stereo_motorcycle()[0]
    else:
        import skimage.data
        img = getattr(skimage.data, name)()
    img = np.asarray(img, dtype=np.float64)
    img = img / (255.0 if img.max() > 1 else 1.0)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3]


def star_field(side: int = 512, seed: int = STARS_SEED) -> np.ndarray:
    """side x side float64 in [0, 1]: a synthetic star field, 1% of the pixels lit with Pareto(1.5)
    brightness, blurred by 0.6 px, on a smooth background (Gaussian 8 px of uniform noise, 10% of the range)."""
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(seed)
    img = np.zeros((side, side))
    n = side * side // 100
    img[rng.integers(0, side, n), rng.integers(0, side, n)] = rng.pareto(1.5, n) * 0.3
    img = gaussian_filter(img, 0.6) + 0.1 * gaussian_filter(rng.random((side, side)), 8)
    return np.clip(img / np.percentile(img, 99.5), 0, 1)


def _pil(x: np.ndarray) -> Image.Image:
    """H x W x 3 in [0, 1] -> RGB PIL image."""
    return Image.fromarray(np.clip(np.round(x * 255), 0, 255).astype(np.uint8))


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def _resize(x: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    filt = [Image.BILINEAR, Image.BICUBIC, Image.LANCZOS][rng.integers(3)]
    return _arr(_pil(x).resize((w, h), filt))


def _copy(kind: str, patch: np.ndarray, photo: np.ndarray | None, y: int, x: int,
          rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One planted copy of `patch` (side x side x 3, cut from `photo` at (y, x); photo None = digits) and its
    amount (EvalSet.amount)."""
    side = patch.shape[0]
    if kind == "shift":
        m = max(1, int(round(0.1 * side)))
        dy, dx = (int(rng.integers(0, m + 1)) * rng.choice([-1, 1]) for _ in range(2))
        if dy == 0 and dx == 0:
            dx = int(rng.choice([-1, 1]))
        amount = max(abs(dy), abs(dx)) / side
        if photo is None:
            out = np.zeros_like(patch)
            out[max(dy, 0):side + min(dy, 0), max(dx, 0):side + min(dx, 0)] = \
                patch[max(-dy, 0):side + min(-dy, 0), max(-dx, 0):side + min(-dx, 0)]
            return out, amount
        return photo[y + dy:y + dy + side, x + dx:x + dx + side].copy(), amount
    if kind == "crop":
        c = max(2, int(round(rng.uniform(0.75, 0.95) * side)))
        oy, ox = rng.integers(0, side - c + 1, size=2)
        return _resize(patch[oy:oy + c, ox:ox + c], side, side, rng), c / side
    if kind == "jpeg":
        import io
        buf = io.BytesIO()
        _pil(patch).save(buf, format="JPEG", quality=int(rng.integers(30, 91)))
        return _arr(Image.open(io.BytesIO(buf.getvalue()))), 0.0
    if kind == "resize":
        f = rng.uniform(0.5, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 2.0)
        n = max(2, int(round(side * f)))
        return _resize(_resize(patch, n, n, rng), side, side, rng), 0.0
    if kind == "brightness":
        return np.clip(patch * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1), 0, 1), 0.0
    if kind == "border":
        w = max(1, int(round(rng.uniform(0.04, 0.10) * side)))
        out = np.empty_like(patch)
        out[:] = rng.uniform(0, 1, size=3) if rng.random() < 0.5 else float(rng.integers(0, 2))
        out[w:side - w, w:side - w] = _resize(patch, side - 2 * w, side - 2 * w, rng)
        return out, w / side
    if kind == "watermark":
        img = _pil(patch).convert("RGBA")
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        text = ["(c) stock", "sample", str(rng.integers(1000, 9999))][rng.integers(3)]
        font = ImageFont.load_default(size=max(4, side // 6))
        draw = ImageDraw.Draw(layer)
        x0, y0 = int(rng.integers(0, max(1, side // 2))), int(rng.integers(0, max(1, side - side // 6)))
        alpha = int(255 * rng.uniform(0.5, 0.8))
        draw.text((x0, y0), text, font=font, fill=(255, 255, 255, alpha))
        return _arr(Image.alpha_composite(img, layer)), 0.0
    if kind == "flip":
        return patch[:, ::-1].copy(), 0.0
    raise ValueError(f"unknown family {kind!r}")


def _patches(photo: np.ndarray, side: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(y, x) corners of the non-overlapping patches of a photo, each with a MARGIN * side border inside it,
    that are not flat (grey std >= MIN_STD); at most MAX_PATCHES, a random choice."""
    m = int(np.ceil(MARGIN * side))
    step = side + m
    ys = range(m, photo.shape[0] - side - m + 1, step)
    xs = range(m, photo.shape[1] - side - m + 1, step)
    grey = photo.mean(axis=2)
    corners = [(y, x) for y in ys for x in xs if grey[y:y + side, x:x + side].std() >= MIN_STD]
    if len(corners) > MAX_PATCHES:
        corners = [corners[i] for i in sorted(rng.choice(len(corners), MAX_PATCHES, replace=False))]
    return corners


def _fit(photo: np.ndarray, side: int) -> np.ndarray:
    """The photo upscaled (bicubic) so that two patches with margins fit along its short side, if needed."""
    need = 2 * side + 3 * int(np.ceil(MARGIN * side))
    short = min(photo.shape[:2])
    if short >= need:
        return photo
    f = need / short
    img = _pil(photo).resize((int(np.ceil(photo.shape[1] * f)), int(np.ceil(photo.shape[0] * f))), Image.BICUBIC)
    return _arr(img)


def _plant(originals: list[np.ndarray], places: list[tuple[np.ndarray | None, int, int]], sources: list[str],
           families: tuple[str, ...], rng: np.random.Generator, side: int) -> EvalSet:
    images, group, family, source, amount = [], [], [], [], []
    for g, (patch, (photo, y, x), src) in enumerate(zip(originals, places, sources)):
        images.append(patch)
        group.append(g)
        family.append("original")
        source.append(src)
        amount.append(0.0)
        if rng.random() >= COPY_SHARE:
            continue
        for kind in rng.choice(families, size=min(COPIES_PER_ORIGINAL, len(families)), replace=False):
            copy, strength = _copy(str(kind), patch, photo, y, x, rng)
            images.append(copy)
            group.append(g)
            family.append(str(kind))
            source.append(src)
            amount.append(strength)
    arr = np.stack(images).astype(np.float32).transpose(0, 3, 1, 2)
    return EvalSet(np.ascontiguousarray(arr), np.asarray(group), np.asarray(family), np.asarray(source), side,
                   np.asarray(amount, dtype=np.float64))


def photo_set(photos: tuple[str, ...], side: int, seed: int, families: tuple[str, ...] = FAMILIES) -> EvalSet:
    """Patches of `photos` at `side` px with planted copies (module docstring), reproducible from `seed`."""
    rng = np.random.default_rng([seed, side])
    originals, places, sources = [], [], []
    for name in photos:
        photo = _fit(load_photo(name), side)
        for y, x in _patches(photo, side, rng):
            originals.append(photo[y:y + side, x:x + side])
            places.append((photo, y, x))
            sources.append(name)
    return _plant(originals, places, sources, families, rng, side)


def digits_set(seed: int, families: tuple[str, ...] = FAMILIES) -> EvalSet:
    """The 1,797 8 x 8 digits (grey over 3 channels, [0, 1]) with planted copies."""
    from sklearn.datasets import load_digits
    rng = np.random.default_rng([seed, 8])
    digits = load_digits().images / 16.0
    originals = [np.repeat(d[..., None], 3, axis=2) for d in digits]
    return _plant(originals, [(None, 0, 0)] * len(originals), ["digits"] * len(originals), families, rng, 8)


def family_view(data: EvalSet, kind: str) -> EvalSet:
    """All originals plus the copies of one family: the set a per-family recall/precision is measured on."""
    return data.subset((data.family == "original") | (data.family == kind))


def quality(groups: np.ndarray, truth: np.ndarray, family: np.ndarray) -> dict:
    """groups: N found group ids (-1 = none); truth: N planted group ids. recall = share of copies grouped with
    their original; precision = share of grouped images (group size >= 2) whose whole found group lies in
    their planted group (a chained or false link makes every member of that group wrong)."""
    found: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        if g >= 0:
            found.setdefault(int(g), []).append(i)
    member_ok = np.zeros(len(groups), dtype=bool)
    grouped = np.zeros(len(groups), dtype=bool)
    for rows in found.values():
        if len(rows) < 2:
            continue
        grouped[rows] = True
        member_ok[rows] = len(set(truth[rows].tolist())) == 1
    originals = {int(t): i for i, (t, f) in enumerate(zip(truth, family)) if f == "original"}
    copies = np.flatnonzero(family != "original")
    hit = [groups[c] >= 0 and groups[c] == groups[originals[int(truth[c])]] for c in copies]
    return {"copies": int(len(copies)), "recall": float(np.mean(hit)) if len(hit) else None,
            "grouped": int(grouped.sum()),
            "precision": float(member_ok[grouped].mean()) if grouped.any() else 1.0,
            "false_members": int((grouped & ~member_ok).sum())}
