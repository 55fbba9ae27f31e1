"""Digits as image-text pairs: captions from varied templates, optionally with a fraction shuffled.

For the ECIF demo, tests and benchmarks: the shuffled pairs are known misaligned pairs (their caption
names another digit), so detection quality can be measured as an AUROC.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from influencegate.data.dataset import ImageDataset
from influencegate.data.digits import load_digits_dataset
from influencegate.data.versioning import derived_version

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: {word}: the digit's English name; {numeral}: the digit itself.
CAPTION_TEMPLATES = (
    "a handwritten {word}",
    "the digit {numeral} written by hand",
    "a scan of the number {word}",
    "a photo of the digit {numeral}",
    "a small blurry {word} drawn with a pen",
    "the number {numeral} in black ink",
    "a low-resolution image of a handwritten {word}",
    "someone wrote the numeral {numeral}",
)


def digit_caption(label: int, template: int) -> str:
    """Caption of digit ``label`` (0-9) from CAPTION_TEMPLATES[template]."""
    if not 0 <= label <= 9:
        raise ValueError(f"digit label must be 0-9, got {label}")
    return CAPTION_TEMPLATES[template].format(word=DIGIT_WORDS[label], numeral=label)


def class_prompts(labels: Sequence[int] = range(10)) -> list[list[str]]:
    """For each label, its caption under every template: len(labels) x len(CAPTION_TEMPLATES) strings
    (the zero-shot prompts, embedded and averaged per class)."""
    return [[digit_caption(int(y), t) for t in range(len(CAPTION_TEMPLATES))] for y in labels]


def caption_digits(labels: Sequence[int], seed: int) -> list[str]:
    """One caption per label, each from a template drawn uniformly at random (seeded)."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, len(CAPTION_TEMPLATES), size=len(labels))
    return [digit_caption(int(y), int(t)) for y, t in zip(labels, templates)]


def shuffle_captions(captions: Sequence[str], labels: Sequence[int], fraction: float,
                     seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Shuffle the captions of round(fraction x N) randomly chosen pairs among themselves, so that each of
    them ends up describing another digit.

    labels: the digit each caption names before shuffling. Returns (captions, caption_labels (N,) the digit
    each new caption names, is_misaligned (N,) bool, True exactly for the chosen pairs). Seeded.
    ValueError when fraction is outside [0, 1] or the chosen pairs cannot all be given another digit
    (all of one digit).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    captions, labels = list(captions), np.asarray(labels, dtype=np.int64)
    if len(captions) != len(labels):
        raise ValueError(f"{len(captions)} captions for {len(labels)} labels")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(captions), size=int(round(fraction * len(captions))), replace=False))
    source = rng.permutation(chosen)
    # Repair the pairs that drew a caption of their own digit: swap sources with a random partner whenever
    # the swap gives both of them another digit.
    for _ in range(100 * max(1, len(chosen))):
        same = np.flatnonzero(labels[source] == labels[chosen])
        if same.size == 0:
            break
        i, j = same[0], rng.integers(len(chosen))
        if labels[source[j]] != labels[chosen[i]] and labels[source[i]] != labels[chosen[j]]:
            source[i], source[j] = source[j], source[i]
    else:
        raise ValueError("cannot shuffle these captions so that every chosen pair names another digit")
    new_captions, caption_labels = list(captions), labels.copy()
    for target, src in zip(chosen, source):
        new_captions[target], caption_labels[target] = captions[src], labels[src]
    is_misaligned = np.zeros(len(captions), dtype=bool)
    is_misaligned[chosen] = True
    return new_captions, caption_labels, is_misaligned


def mislabel_digit(captions: Sequence[str], labels: Sequence[int], source: int, target: int, share: float,
                   rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """A systematic caption error: round(share x count) of the images of digit ``source`` (drawn with
    ``rng``) get a caption of digit ``target`` (a template drawn with ``rng``); the others keep theirs.
    Returns (captions, is_misaligned (N,) bool)."""
    labels = np.asarray(labels)
    members = np.flatnonzero(labels == source)
    chosen = rng.choice(members, size=int(round(share * len(members))), replace=False)
    captions = list(captions)
    for i, template in zip(chosen, rng.integers(0, len(CAPTION_TEMPLATES), size=len(chosen))):
        captions[i] = digit_caption(target, int(template))
    return captions, np.isin(np.arange(len(captions)), chosen)


#: Digits held out as the clean reference part of ``captioned_digits`` (a fixed, seeded choice).
REFERENCE_SIZE = 200
#: Parts of ``captioned_digits``: every digit, the audited ones, or the held-out reference.
PARTS = ("all", "audit", "reference")


def digit_part(n: int, part: str) -> np.ndarray:
    """Positions (sorted) of ``part`` among n digits: all of them, the REFERENCE_SIZE held out as a clean
    reference (a fixed seeded choice, the same for every caption seed), or the rest ("audit")."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if part == "all":
        return np.arange(n)
    held_out = np.zeros(n, dtype=bool)
    held_out[np.random.default_rng(2024).choice(n, size=REFERENCE_SIZE, replace=False)] = True
    return np.flatnonzero(held_out if part == "reference" else ~held_out)


def captioned_digits(fraction: float = 0.0, seed: int = 0, image_size: int | None = None,
                     channels: int | None = None, part: str = "all") -> ImageDataset:
    """scikit-learn's digits (``load_digits_dataset``) as image-text pairs.

    part: "all" (1,797 pairs), "audit" (1,597) or "reference" (the REFERENCE_SIZE = 200 others, see
    ``digit_part``): audit and reference never share an image, so the reference can serve as the clean set
    the audited pairs are measured against. records gain ``caption`` (templated, seeded), ``caption_label``
    (the digit the caption names) and ``is_misaligned`` (True for the round(fraction x n) pairs of the part
    whose captions were shuffled, see ``shuffle_captions``); ``label`` stays the image's digit. The version
    derives from the digits' version and the captions.
    """
    digits = load_digits_dataset(image_size, channels)
    rows = digit_part(len(digits), part)
    records = digits.records.iloc[rows].reset_index(drop=True)
    labels = records["label"].to_numpy()
    captions, caption_labels, is_misaligned = shuffle_captions(caption_digits(labels, seed), labels, fraction, seed + 1)
    records["caption"], records["caption_label"], records["is_misaligned"] = captions, caption_labels, is_misaligned
    suffix = "" if part == "all" else f"-{part}"
    return ImageDataset(
        digits.batch(rows), [digits.sample_ids[i] for i in rows], records,
        name=f"digits-captions{suffix}-{fraction:g}-seed{seed}",
        version=derived_version(digits.version, captions),
        mean=digits.mean, std=digits.std, source="digits",
    )
