"""Near-duplicates on natural images at 32-224 px and the digits: ours next to peers, held-out (issue 14).

Data and split: benchmarks/natural_images.py. Tuning (ViewMatch's rule and align_sigma, `tune`; ViewMatch.texture
with the rule fixed, `tune_texture`; the aligned check's scale refinement with the threshold, texture and
nearest-neighbour proposals, `tune_refine`; session 15: the aligned check's zoom blur and resampling with the
threshold and the nearest view neighbour's floor, `tune_zoom`, also on the fine-texture tuning photos
natural_images.TEXTURE_TUNE_PHOTOS; session 16: the index's corner codes, `tune_corners`, and the aligned check's
matched-resolution NCC with the threshold, `tune_match`, on both tuning sets): photos TUNE_PHOTOS at 32 and 128 px, planting seeds TUNE_SEEDS (0, 10, 11); `--diagnose`: the previous view rule's
misses on the tuning split (seed 0). Reported (`held_out`): photos HELD_OUT_PHOTOS at 32, 64, 128, 224 px and the digits, planting
seeds HELD_OUT_SEEDS pooled (each seed plants other copies of other originals). Per (side, family) the set is
all originals of that side plus that family's copies (natural_images.family_view); recall and precision as in
natural_images.quality.

Methods, each on exactly the same images:
  views        influencegate.findings.view_search.view_pairs, ViewMatch() defaults (exhaustive all pairs: the
               views propose, the aligned check of findings/align.py decides);
  views_index  influencegate.findings.duplicate_index (streaming index, candidates, same check);
  views_s14, views_index_s14  the same two paths as session 14 left them (Session14Match: the "before" rows);
  views_s15, views_index_s15  as session 15 left them (Session15Match: the "before" rows of session 16);
  tiles        the previous matcher (image_similarity.image_pairs, ImageMatch() defaults, tuned on digits);
  imagehash    imagehash.phash (64 bits), linked at Hamming distance <= 10 (imagededup's default for PHash);
  imagededup   imagededup.methods.PHash().find_duplicates(encoding_map, max_distance_threshold=10);
  cleanlab     cleanlab Datalab near_duplicate issues (defaults) with the whole-image view as features;
  fastdup      fastdup 2.54 (runs offline: its embedding model ships in the wheel), defaults, pairs at its
               default component threshold 0.96, in a venv of its own (FASTDUP_PYTHON; CORE families only);
               images below 32 px (the digits) upscaled to 32 px for it.
Peers are run with their documented defaults (not tuned here). flip: measured with ViewMatch(flip=True) only.

Output: benchmarks/results/duplicates_natural.json.
Run: python benchmarks/duplicates_natural.py [--seeds 1,2] [--sides 32,64] [--tune] [--methods views,tiles]
     [--out FILE] [--diagnose | --tune-only | --tune-texture | --tune-refine | --tune-zoom | --tune-corners |
     --tune-match | --scales]; the fastdup peer needs
     FASTDUP_PYTHON (above)
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

sys.path.insert(0, str(Path(__file__).resolve().parent))
import natural_images as ni  # noqa: E402

from influencegate.findings import duplicate_index  # noqa: E402
from influencegate.findings.code_candidates import CORNER_K  # noqa: E402
from influencegate.findings.duplicate_index import indexed_view_pairs  # noqa: E402
from influencegate.findings.image_similarity import ImageMatch, image_pairs  # noqa: E402
from influencegate.findings.align import Alignment, align_pairs, thumbnails  # noqa: E402
from influencegate.findings.view_search import aligned_scores, block_similarity, view_pairs  # noqa: E402
from influencegate.findings.views import ViewMatch, _base, view_descriptors  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "duplicates_natural.json"
HELD_OUT_SEEDS = (1, 2, 3)
CORE = ("shift", "crop", "jpeg", "resize", "brightness", "border")
HAMMING = 10


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """N group ids of the connected components of the pairs, -1 for singletons."""
    g = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    sizes = np.bincount(lab)
    return np.where(sizes[lab] > 1, lab, -1)


def _uint8(images: np.ndarray) -> list:
    from PIL import Image
    return [Image.fromarray(np.clip(np.round(x.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)) for x in images]


def phash_pairs(images: np.ndarray, library: str) -> tuple[np.ndarray, np.ndarray]:
    """Pairs at pHash Hamming distance <= HAMMING, hashed by imagehash or imagededup."""
    pil = _uint8(images)
    if library == "imagehash":
        import imagehash
        bits = np.stack([imagehash.phash(p).hash.reshape(-1) for p in pil]).astype(np.uint8)
        dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
        i, j = np.nonzero(np.triu(dist <= HAMMING, 1))
        return i, j
    from imagededup.methods import PHash
    hasher = PHash(verbose=False)
    enc = {str(n): hasher.encode_image(image_array=np.asarray(p)) for n, p in enumerate(pil)}
    dup = hasher.find_duplicates(encoding_map=enc, max_distance_threshold=HAMMING)
    pairs = {(min(int(a), int(b)), max(int(a), int(b))) for a, bs in dup.items() for b in bs}
    arr = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def cleanlab_pairs(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab Datalab near_duplicate sets (defaults) on the whole-image view features."""
    import pandas as pd
    from cleanlab import Datalab
    feats = view_descriptors(torch.from_numpy(images), ViewMatch())[:, 0].numpy()
    lab = Datalab(pd.DataFrame({"x": np.arange(len(feats))}), verbosity=0)
    lab.find_issues(features=feats, issue_types={"near_duplicate": {}})
    issues = lab.get_issues("near_duplicate")
    ii, jj = [], []
    for a, (flag, sets) in enumerate(zip(issues["is_near_duplicate_issue"], issues["near_duplicate_sets"])):
        for b in (sets if flag else []):
            ii.append(min(a, int(b)))
            jj.append(max(a, int(b)))
    return np.asarray(ii, np.int64), np.asarray(jj, np.int64)


#: fastdup pins numpy 1.26 / scikit-learn 1.5 (it would downgrade this environment), so it runs in a venv of its
#: own (`python -m venv DIR && DIR/bin/pip install fastdup`), named by the FASTDUP_PYTHON environment variable.
FASTDUP_SCRIPT = """
import sys, fastdup
fd = fastdup.create(work_dir=sys.argv[2], input_dir=sys.argv[1])
fd.run(overwrite=True, verbose=False)
sim = fd.similarity()
ok = sim["distance"] >= float(sys.argv[3])
for a, b in zip(sim["filename_from"][ok], sim["filename_to"][ok]):
    print("PAIR", a.rsplit("/", 1)[-1].split(".")[0], b.rsplit("/", 1)[-1].split(".")[0])
"""
#: fastdup's default ccthreshold: the similarity from which its connected components call images duplicates.
FASTDUP_THRESHOLD = 0.96


def fastdup_pairs(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs fastdup (its bundled ONNX model, offline; defaults) links at similarity >= FASTDUP_THRESHOLD."""
    import os
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for n, img in enumerate(_uint8(images)):
            img.resize((max(img.width, 32), max(img.height, 32))).save(folder / f"{n}.png")  # fastdup: >= 10 px
        out = subprocess.run([os.environ["FASTDUP_PYTHON"], "-c", FASTDUP_SCRIPT, str(folder), str(Path(tmp) / "work"),
                              str(FASTDUP_THRESHOLD)], capture_output=True, text=True, check=True).stdout
    rows = [line.split()[1:] for line in out.splitlines() if line.startswith("PAIR ")]
    pairs = {(min(int(a), int(b)), max(int(a), int(b))) for a, b in rows}
    arr = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


@dataclass(frozen=True)
class Session15Match(ViewMatch):
    """ViewMatch as session 15 left it (the "before" rows of session 16): no corner codes in the index, the
    aligned check without the matched-resolution NCC."""

    code_corners: float = 0.0

    def alignment(self) -> Alignment:
        return replace(super().alignment(), match_sigmas=())


@dataclass(frozen=True)
class Session14Match(Session15Match):
    """ViewMatch as session 14 left it (the "before" rows of session 15): threshold 0.997, no nearest-neighbour
    proposals, the aligned check without the zoom blur, bilinear resampling."""

    threshold: float = 0.997
    nearest: float = 1.0  # above propose: off

    def alignment(self) -> Alignment:
        return replace(super().alignment(), zoom_blur=0.0, sample="bilinear")


def run_method(name: str, data: ni.EvalSet) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(data.images)
    if name == "views":
        return view_pairs(x)[:2]
    if name == "views_s14":
        return view_pairs(x, Session14Match())[:2]
    if name == "views_s15":
        return view_pairs(x, Session15Match())[:2]
    if name == "views_index_s15":
        return indexed_view_pairs((x[s:s + 512] for s in range(0, len(x), 512)), Session15Match())[:2]
    if name == "views_index_s14":
        return indexed_view_pairs((x[s:s + 512] for s in range(0, len(x), 512)), Session14Match())[:2]
    if name == "views_flip":
        return view_pairs(x, ViewMatch(flip=True))[:2]
    if name == "views_index":
        return indexed_view_pairs((x[s:s + 512] for s in range(0, len(x), 512)))[:2]
    if name == "tiles":
        return image_pairs(x, ImageMatch())[:2]
    if name in ("imagehash", "imagededup"):
        return phash_pairs(data.images, name)
    if name == "cleanlab":
        return cleanlab_pairs(data.images)
    if name == "fastdup":
        return fastdup_pairs(data.images)
    raise ValueError(name)


def held_out(methods: list[str], seeds: tuple[int, ...], sides: tuple[int, ...] = (*ni.SIDES, 8),
             families: tuple[str, ...] = ni.FAMILIES) -> dict:
    """{method: {side: {family: quality pooled over seeds}}} on the held-out photos and the digits (side 8),
    copies planted of `families` only (all: the table of record; ("crop",): one crop per copied original,
    more crops per set where a cell has few)."""
    out: dict = {m: {} for m in methods}
    for side in sides:
        for seed in seeds:
            data = ni.digits_set(seed, families) if side == 8 else ni.photo_set(ni.HELD_OUT_PHOTOS, side, seed,
                                                                                 families)
            for fam in families:
                view = ni.family_view(data, fam)
                for m in methods:
                    if (fam == "flip") != (m == "views_flip") and m.startswith("views_flip"):
                        continue
                    if m == "fastdup" and fam not in CORE:
                        continue  # the slowest peer: the families of the bar only
                    t = time.perf_counter()
                    i, j = run_method(m, view)
                    q = ni.quality(components(len(view.images), i, j), view.group, view.family)
                    cell = out[m].setdefault(str(side), {}).setdefault(fam, [])
                    cell.append({**q, "seconds": time.perf_counter() - t, "n_images": len(view.images)})
            print(f"side {side} seed {seed} done", file=sys.stderr, flush=True)
    return {m: {s: {f: pool(c) for f, c in fams.items()} for s, fams in sides.items()} for m, sides in out.items()}


def pool(cells: list[dict]) -> dict:
    """Recall and precision pooled over seeds (weighted by copies / grouped images), each seed's beside them."""
    copies = sum(c["copies"] for c in cells)
    grouped = sum(c["grouped"] for c in cells)
    hits = sum(c["recall"] * c["copies"] for c in cells if c["recall"] is not None)
    good = sum(c["precision"] * c["grouped"] for c in cells)
    return {"copies": copies, "recall": hits / copies if copies else None, "grouped": grouped,
            "precision": good / grouped if grouped else 1.0, "n_images_per_seed": cells[0]["n_images"],
            "seconds": sum(c["seconds"] for c in cells),
            "per_seed": [{k: c[k] for k in ("copies", "recall", "grouped", "precision")} for c in cells]}


#: Planting seeds of the tuning split (TUNE_PHOTOS at TUNE_SIDES); the held-out photos are never planted here.
TUNE_SEEDS = (0, 10, 11)
#: The aligned check's pre-blur (ViewMatch.align_sigma) compared on the tuning split.
TUNE_SIGMAS = (0.7, 1.0)


def _tuning_scores(sigma: float, combine: bool, texture: float = -1.0) -> list[tuple[ni.EvalSet, np.ndarray, np.ndarray]]:
    """Per tuning (side, seed): (set, all-pairs view similarity matrix, proposed pairs' scores as a matrix,
    -2 elsewhere); scores = the aligned NCC at pre-blur `sigma`, or max(view, aligned) with combine; -2 where
    the residual NCC is below `texture` (ViewMatch.texture; -1: the rule grid's, no texture test)."""
    match = replace(ViewMatch(), align_sigma=sigma, texture=texture)
    out = []
    for d, s, small in _tuning_sets(match):
        i, j = np.nonzero(np.triu(s >= match.propose, 1))
        a = aligned_scores(i, j, s[i, j] if combine else np.full(len(i), -1.0, np.float32),  # max(-1, NCC)
                           lambda rows: small[torch.from_numpy(rows)], replace(match, propose=-1.0))
        full = np.full_like(s, -2.0)
        full[i, j] = full[j, i] = a
        out.append((d, s, full))
    return out


def _tuning_sets(match: ViewMatch, photos: tuple[str, ...] = ni.TUNE_PHOTOS
                 ) -> Iterator[tuple[ni.EvalSet, np.ndarray, torch.Tensor]]:
    """Per tuning (side, seed), in order: (set, its N x N view similarity matrix with -2 on the diagonal, its
    N x K x align_side^2 aligned-check thumbnails)."""
    for side in ni.TUNE_SIDES:
        for seed in TUNE_SEEDS:
            d = ni.photo_set(photos, side, seed)
            x = torch.from_numpy(d.images)
            s = block_similarity(view_descriptors(x, match), view_descriptors(x, match), match).numpy()
            np.fill_diagonal(s, -2.0)
            yield d, s, thumbnails(_base(x, 3 * match.side, match.colour, "cpu"), match.align_side)


def _rule_quality(data: list[tuple[ni.EvalSet, np.ndarray, np.ndarray]], t: float, f: float, k: int,
                  r: float) -> dict:
    """{"side/family/seed index": quality} of the link rule (threshold t, floor f, k, ratio r) on the tuning
    scores of _tuning_scores, per CORE family view."""
    cells = {}
    for n, (d, s, a) in enumerate(data):
        for fam in CORE:
            keep = (d.family == "original") | (d.family == fam)
            sv, av, dv = s[np.ix_(keep, keep)], a[np.ix_(keep, keep)], d.subset(keep)
            gk = 1 - (-np.sort(-sv, axis=1)[:, k - 1])
            gap = 1 - av
            linked = (av >= t) | ((av >= f) & (gap <= r * gk[:, None]) & (gap <= r * gk[None, :]))
            i, j = np.nonzero(np.triu(linked, 1))
            cells[f"{d.side}/{fam}/{n}"] = ni.quality(components(len(dv.images), i, j), dv.group, dv.family)
    return cells


def _worst(cells: dict) -> float:
    """The worst recall or precision over the cells of _rule_quality."""
    return min(min(c["recall"], c["precision"]) for c in cells.values())


def tune() -> dict:
    """The rule grid on the tuning split (TUNE_PHOTOS at TUNE_SIDES, seeds TUNE_SEEDS): worst min(recall,
    precision) over CORE families, sides and seeds, per (score, align_sigma, threshold, floor, k, ratio)."""
    rows = []
    for sigma, combine in itertools.product(TUNE_SIGMAS, (False, True)):
        data = _tuning_scores(sigma, combine)
        for t, f, k, r in itertools.product((0.98, 0.99, 0.995, 0.997, 0.998, 0.999), (0.9, 0.93, 0.95, 0.97),
                                            (3, 5), (0.1, 0.2, 0.3, 0.5, 1.0)):
            worst = _worst(_rule_quality(data, t, f, k, r))
            rows.append({"score": "max(view, aligned)" if combine else "aligned", "align_sigma": sigma,
                         "threshold": t, "floor": f, "k": k, "ratio": r, "worst_min_recall_precision": worst})
        print(f"tuned sigma {sigma} combine {combine}", file=sys.stderr, flush=True)
    # ties (the floor often ties): the previous rule's floor 0.95 (0.97 lost the JPEG copies of
    # tests/test_findings_views.py, view similarity 0.965 on smooth 32 px fields)
    rows.sort(key=lambda x: (-x["worst_min_recall_precision"], abs(x["floor"] - 0.95)))
    return {"split": f"TUNE_PHOTOS at TUNE_SIDES, seeds {TUNE_SEEDS}", "best": rows[0], "grid": rows}


#: ViewMatch.texture values compared on the tuning split (-1: no texture test, the rule before).
TUNE_TEXTURES = (-1.0, 0.4, 0.5, 0.6, 0.7, 0.8)


def _pooled(cells: dict) -> dict:
    """{"side/family": {"recall", "precision"}}: _rule_quality's cells pooled over the seeds (as `pool`)."""
    out: dict = {}
    for key, c in cells.items():
        out.setdefault(key.rsplit("/", 1)[0], []).append({**c, "seconds": 0.0, "n_images": 0})
    return {k: {m: pool(v)[m] for m in ("recall", "precision")} for k, v in out.items()}


def _select(rows: list[dict], cost: str | None = None) -> dict:
    """The row (with "cells" of _rule_quality) with the most (side, family) cells pooled over the seeds at the
    bar (recall and precision >= 0.95), ties by the highest mean over the per-seed cells of
    min(recall, precision), then (with `cost`, a row key) the lowest cost, then the first."""
    def key(row: dict) -> tuple[int, float, float]:
        at_bar = sum(min(c.values()) >= 0.95 for c in _pooled(row["cells"]).values())
        return (at_bar, float(np.mean([min(c["recall"], c["precision"]) for c in row["cells"].values()])),
                -float(row[cost]) if cost else 0.0)
    return max(rows, key=key)


def select_texture(rows: list[dict]) -> float:
    """The texture value of tune_texture's rows chosen by _select."""
    return _select(rows)["texture"]


def tune_texture() -> dict:
    """ViewMatch.texture on the tuning split, the rule (threshold, floor, k, ratio, align_sigma) fixed at the
    defaults: per value, every cell (side/family/seed), the worst min(recall, precision) and the lowest
    precision and recall at 32 px; the value chosen by select_texture."""
    m = ViewMatch()
    rows = []
    for texture in TUNE_TEXTURES:
        cells = _rule_quality(_tuning_scores(m.align_sigma, True, texture), m.threshold, m.floor, m.k, m.ratio)
        small = [c for key, c in cells.items() if key.startswith("32/")]
        rows.append({"texture": texture, "worst_min_recall_precision": _worst(cells),
                     "precision_min_32": min(c["precision"] for c in small),
                     "recall_min_32": min(c["recall"] for c in small), "cells": cells})
        print(f"texture {texture}: worst {rows[-1]['worst_min_recall_precision']:.3f} "
              f"precision_min_32 {rows[-1]['precision_min_32']:.3f}", file=sys.stderr, flush=True)
    for row in rows:
        row["pooled"] = _pooled(row["cells"])
    return {"split": f"TUNE_PHOTOS at TUNE_SIDES, seeds {TUNE_SEEDS}", "best": select_texture(rows), "grid": rows}


#: The refine-step grid on the tuning split (`--tune-refine`): Alignment.refine rounds, ViewMatch.threshold,
#: ViewMatch.texture, and how many nearest view neighbours of each image are aligned even below `propose`.
TUNE_REFINE = {"refine": (0, 3), "threshold": (0.995, 0.996, 0.997), "texture": (0.5, 0.6), "propose_top": (0, 1, 2)}


def _aligned_tuning_pairs(refine: int) -> list[tuple[ni.EvalSet, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per tuning (side, seed): (set, all-pairs view similarity matrix, its top-2 neighbours' mask, aligned NCC
    and residual NCC matrices with Alignment.refine rounds, NaN where not aligned); aligned: every pair at
    s >= propose and each image's max(propose_top) nearest."""
    match = ViewMatch()  # max(TUNE_REFINE["propose_top"]) = 2 nearest, as _zoom_tuning_pairs aligns
    return _zoom_tuning_pairs(replace(match.alignment(), refine=refine), list(_tuning_sets(match)))


def tune_refine() -> dict:
    """The aligned check's continuous scale refinement (Alignment.refine) with ViewMatch.threshold, texture and
    nearest-neighbour proposals (TUNE_REFINE), floor, k, ratio and align_sigma fixed at the defaults, on the
    tuning split: every cell (side/family/seed) per setting; the setting chosen as select_texture chooses
    (most pooled cells at the bar, ties by the mean per-seed min(recall, precision)); a tie left after that
    goes to the fewest aligned pairs (propose_top 0 before 1 before 2)."""
    m = ViewMatch()
    rows = []
    for refine in TUNE_REFINE["refine"]:
        data = _aligned_tuning_pairs(refine)
        for t, texture, top in itertools.product(TUNE_REFINE["threshold"], TUNE_REFINE["texture"],
                                                 TUNE_REFINE["propose_top"]):
            scored = []
            for d, s, rank, score, residual, _ in data:
                asked = (s >= m.propose) | ((rank > 0) & (rank <= top)) | ((rank.T > 0) & (rank.T <= top))
                ok = asked & (np.nan_to_num(residual, nan=-2.0) >= texture)
                scored.append((d, s, np.where(ok, np.maximum(np.nan_to_num(score, nan=-2.0), s), -2.0)))
            cells = _rule_quality(scored, t, m.floor, m.k, m.ratio)
            rows.append({"refine": refine, "threshold": t, "texture": texture, "propose_top": top,
                         "worst_min_recall_precision": _worst(cells), "cells": cells, "pooled": _pooled(cells)})
            print(f"refine {refine} threshold {t} texture {texture} top {top}: worst {_worst(cells):.3f}",
                  file=sys.stderr, flush=True)
    best = _select(rows)
    return {"split": f"TUNE_PHOTOS at TUNE_SIDES, seeds {TUNE_SEEDS}", "fixed": {"floor": m.floor, "k": m.k,
            "ratio": m.ratio, "align_sigma": m.align_sigma, "propose": m.propose},
            "best": {key: best[key] for key in ("refine", "threshold", "texture", "propose_top")}, "grid": rows}


#: Session 15's grid on both tuning sets (TUNE_PHOTOS and ni.TEXTURE_TUNE_PHOTOS, TUNE_SIDES, TUNE_SEEDS): the
#: aligned check's template blur for its zoom (Alignment.zoom_blur) and resampling (Alignment.sample), the
#: threshold, and each image's nearest view neighbours aligned below `propose` down to a view-similarity floor.
TUNE_ZOOM = {"zoom_blur": (0.0, 1.0), "sample": ("bilinear", "bicubic"), "threshold": (0.996, 0.997, 0.998),
             "propose_top": (0, 1, 2), "top_floor": (0.5, 0.7, 0.8)}


def _zoom_tuning_pairs(align: Alignment, sets: list) -> list:
    """Per tuning set of `sets` ((set, view similarity matrix, thumbnails)): (set, s, rank of each image's
    nearest view neighbours (1, 2; 0 elsewhere), aligned NCC and residual NCC matrices, NaN where not aligned,
    and the N x N x len(align.match_sigmas) matched NCCs, resolution.blurred_ncc); aligned: every pair at
    s >= propose and each image's 2 nearest."""
    match = ViewMatch()
    out = []
    for d, s, small in sets:
        rank = np.zeros(s.shape, dtype=np.int64)
        np.put_along_axis(rank, np.argsort(-s, axis=1)[:, :2], np.arange(1, 3)[None], axis=1)
        i, j = np.nonzero(np.triu((s >= match.propose) | (rank > 0) | (rank.T > 0), 1))
        found = align_pairs(small[torch.from_numpy(i)], small[torch.from_numpy(j)], align)
        score, residual = np.full_like(s, np.nan), np.full_like(s, np.nan)
        score[i, j] = score[j, i] = found["score"].numpy()
        residual[i, j] = residual[j, i] = found["residual"].numpy()
        matched = np.full((*s.shape, len(align.match_sigmas)), np.nan, dtype=np.float32)
        matched[i, j] = matched[j, i] = found["matched"].numpy()
        out.append((d, s, rank, score, residual, matched))
    return out


def tune_zoom() -> dict:
    """TUNE_ZOOM on the tuning split (both tuning sets), the rest of ViewMatch fixed: every cell per setting
    ("set/side/family/seed index"), the pooled cells, and the count of aligned pairs per image (cost); the
    setting chosen by _select (most pooled cells at the bar, the mean per-seed min(recall, precision), then
    the fewest aligned pairs per image, as tune_refine breaks ties)."""
    m = ViewMatch()
    sets = {name: list(_tuning_sets(m, photos)) for name, photos in
            (("tune", ni.TUNE_PHOTOS), ("texture", ni.TEXTURE_TUNE_PHOTOS))}
    rows = []
    for zb, sample in itertools.product(TUNE_ZOOM["zoom_blur"], TUNE_ZOOM["sample"]):
        align = replace(m.alignment(), zoom_blur=zb, sample=sample)
        data = {name: _zoom_tuning_pairs(align, v) for name, v in sets.items()}
        for t, top, top_floor in itertools.product(TUNE_ZOOM["threshold"], TUNE_ZOOM["propose_top"],
                                                   TUNE_ZOOM["top_floor"]):
            if top == 0 and top_floor != TUNE_ZOOM["top_floor"][0]:
                continue
            cells, asked_n, images_n = {}, 0, 0
            for name, part in data.items():
                scored = []
                for d, s, rank, score, residual, _ in part:
                    near = ((rank > 0) & (rank <= top)) | ((rank.T > 0) & (rank.T <= top))
                    asked = (s >= m.propose) | (near & (s >= top_floor))
                    asked_n += int(np.triu(asked, 1).sum())
                    images_n += len(s)
                    ok = asked & (np.nan_to_num(residual, nan=-2.0) >= m.texture)
                    scored.append((d, s, np.where(ok, np.maximum(np.nan_to_num(score, nan=-2.0), s), -2.0)))
                cells.update({f"{name}/{k}": c for k, c in _rule_quality(scored, t, m.floor, m.k, m.ratio).items()})
            rows.append({"zoom_blur": zb, "sample": sample, "threshold": t, "propose_top": top, "top_floor": top_floor,
                         "aligned_per_image": asked_n / images_n, "worst_min_recall_precision": _worst(cells),
                         "cells": cells, "pooled": _pooled(cells)})
            print(f"zoom_blur {zb} {sample} t {t} top {top}/{top_floor}: worst {_worst(cells):.3f}", file=sys.stderr,
                  flush=True)
        print(f"done zoom_blur {zb} {sample}", file=sys.stderr, flush=True)
    best = _select(rows, cost="aligned_per_image")
    return {"split": f"TUNE_PHOTOS and TEXTURE_TUNE_PHOTOS at TUNE_SIDES, seeds {TUNE_SEEDS}",
            "best": {k: best[k] for k in ("zoom_blur", "sample", "threshold", "propose_top", "top_floor")},
            "grid": rows}


#: Session 16's grid on both tuning sets: the blurs of the sharper side of the aligned overlap
#: (Alignment.match_sigmas, resolution.py; (): off, the check before) and ViewMatch.threshold.
TUNE_MATCH = {"match_sigmas": ((), (0.5,), (0.5, 1.0), (1.0, 2.0), (0.5, 1.0, 1.5, 2.0), (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)),
              "threshold": (0.998, 0.999)}


def tune_match() -> dict:
    """TUNE_MATCH on the tuning split (both tuning sets, as tune_zoom), the rest of ViewMatch at its session-15
    defaults (each image's nearest view neighbour aligned from `nearest`): score = max(view similarity, aligned
    NCC, the best matched NCC of the setting's sigmas); every cell per setting, the pooled cells; chosen by
    _select (most pooled cells at the bar, the mean per-seed min(recall, precision), then the fewest sigmas).
    Also the JPEG copies at 32 px each setting still misses (source, view similarity, aligned, matched)."""
    m = ViewMatch()
    every = TUNE_MATCH["match_sigmas"][-1]
    align = replace(m.alignment(), match_sigmas=every)
    data = {name: _zoom_tuning_pairs(align, list(_tuning_sets(m, photos))) for name, photos in
            (("tune", ni.TUNE_PHOTOS), ("texture", ni.TEXTURE_TUNE_PHOTOS))}
    rows = []
    for sigmas, t in itertools.product(*TUNE_MATCH.values()):
        cols = [every.index(x) for x in sigmas]
        cells, missed = {}, []
        for name, part in data.items():
            scored = []
            for d, s, rank, score, residual, matched in part:
                near = (rank == 1) | (rank.T == 1)
                asked = (s >= m.propose) | (near & (s >= m.nearest))
                best = np.nan_to_num(score, nan=-2.0)
                if cols:
                    best = np.maximum(best, np.nan_to_num(matched[..., cols].max(-1), nan=-2.0))
                ok = asked & (np.nan_to_num(residual, nan=-2.0) >= m.texture)
                a = np.where(ok, np.maximum(best, s), -2.0)
                scored.append((d, s, a))
            got = _rule_quality(scored, t, m.floor, m.k, m.ratio)
            cells.update({f"{name}/{k}": c for k, c in got.items()})
            for (d, s, a), (_, _, _, score, residual, matched) in zip(scored, part):
                if d.side != 32:
                    continue
                keep = (d.family == "original") | (d.family == "jpeg")
                gk = 1 - (-np.sort(-s[np.ix_(keep, keep)], axis=1)[:, m.k - 1])
                rows_k = np.flatnonzero(keep)
                for c in np.flatnonzero(d.family == "jpeg"):
                    o = int(np.flatnonzero((d.group == d.group[c]) & (d.family == "original"))[0])
                    kc, ko = int(np.searchsorted(rows_k, c)), int(np.searchsorted(rows_k, o))
                    gap = 1 - a[c, o]
                    if a[c, o] >= t or (a[c, o] >= m.floor and gap <= m.ratio * gk[kc] and gap <= m.ratio * gk[ko]):
                        continue
                    missed.append({"set": name, "source": str(d.source[c]), "view": float(s[c, o]),
                                   "aligned": float(np.nan_to_num(score[c, o], nan=-2)),
                                   "matched": [float(v) for v in np.nan_to_num(matched[c, o], nan=-2)],
                                   "residual": float(np.nan_to_num(residual[c, o], nan=-2)),
                                   "kth_gap": [float(gk[kc]), float(gk[ko])]})
        rows.append({"match_sigmas": list(sigmas), "threshold": t, "n_sigmas": len(sigmas),
                     "worst_min_recall_precision": _worst(cells), "cells": cells, "pooled": _pooled(cells),
                     "jpeg32_missed": missed})
        print(f"sigmas {sigmas} t {t}: worst {_worst(cells):.3f}, 32 px JPEG misses {len(missed)}", file=sys.stderr,
              flush=True)
    best = _select(rows, cost="n_sigmas")
    return {"split": f"TUNE_PHOTOS and TEXTURE_TUNE_PHOTOS at TUNE_SIDES, seeds {TUNE_SEEDS}",
            "best": {k: best[k] for k in ("match_sigmas", "threshold")}, "grid": rows}


#: Session 16's corner codes of the index (ViewMatch.code_corners, code_candidates.CORNER_K) on both tuning sets
#: at 32 px: (offset of the corner windows, neighbours per corner code); (0.0, 0): anchors only, the index before.
TUNE_CORNERS = ((0.0, 0), (0.05, 3), (0.05, 5), (0.05, 10), (0.1, 3), (0.1, 5), (0.1, 10))


def tune_corners(families: tuple[str, ...] = ("crop", "shift", "jpeg")) -> dict:
    """TUNE_CORNERS on both tuning sets at 32 px, seeds TUNE_SEEDS, per family view: candidates per image, the
    share of the planted copies and of the all-pairs links (view_pairs) among the index's candidates, and the
    index path's recall and precision. Chosen: every all-pairs link among the candidates in every cell and the
    most pooled cells at the bar, then the fewest candidates per image."""
    out: dict = {f"{off}/{k}": {} for off, k in TUNE_CORNERS}
    for name, photos in (("tune", ni.TUNE_PHOTOS), ("texture", ni.TEXTURE_TUNE_PHOTOS)):
        for seed in TUNE_SEEDS:
            d = ni.photo_set(photos, 32, seed)
            for fam in families:
                v = ni.family_view(d, fam)
                x = torch.from_numpy(v.images)
                exact = set(zip(*(a.tolist() for a in view_pairs(x)[:2])))
                orig = {int(g): i for i, (g, f) in enumerate(zip(v.group, v.family)) if f == "original"}
                planted = {tuple(sorted((int(c), orig[int(v.group[c])]))) for c in np.flatnonzero(v.family != "original")}
                for off, k in TUNE_CORNERS:
                    duplicate_index.CORNER_K = k
                    idx = duplicate_index.ViewIndex(replace(ViewMatch(), code_corners=off))
                    try:
                        for start in range(0, len(x), 512):
                            idx.add(x[start:start + 512])
                        ci, cj = idx.candidates()
                        i, j, _, _ = idx.pairs()
                    finally:
                        idx.close()
                    cand = set(zip(ci.tolist(), cj.tolist()))
                    q = ni.quality(components(len(x), i, j), v.group, v.family)
                    out[f"{off}/{k}"][f"{name}/32/{fam}/{seed}"] = {
                        "n_images": len(x), "candidates": len(ci), "planted": len(planted),
                        "planted_in_candidates": len(planted & cand), "exact_links": len(exact),
                        "exact_links_in_candidates": len(exact & cand),
                        **{key: q[key] for key in ("copies", "recall", "grouped", "precision")}}
            print(f"corners: {name} seed {seed} done", file=sys.stderr, flush=True)
    duplicate_index.CORNER_K = CORNER_K
    summary = {}
    for setting, cells in out.items():
        summary[setting] = {"candidates_per_image": sum(c["candidates"] for c in cells.values())
                            / sum(c["n_images"] for c in cells.values()),
                            "all_links_in_candidates": all(c["exact_links_in_candidates"] == c["exact_links"]
                                                           for c in cells.values()),
                            "pooled": _pooled(cells)}
    ok = [k for k, v in summary.items() if v["all_links_in_candidates"]]
    best = max(ok, key=lambda k: (sum(min(c.values()) >= 0.95 for c in summary[k]["pooled"].values()),
                                  -summary[k]["candidates_per_image"]))
    return {"split": f"TUNE_PHOTOS and TEXTURE_TUNE_PHOTOS at 32 px, seeds {TUNE_SEEDS}", "best": best,
            "summary": summary, "cells": out}


def diagnose() -> dict:
    """The previous view rule's misses on the tuning split: per planted shift / crop / border copy it missed,
    its best view similarity to its original, the copy's amount, and the views that gave that best."""
    match = replace(ViewMatch(), threshold=0.998, ratio=0.2)  # the view rule before the aligned check
    wins, anchors = match.windows()
    out = {"rule": {"threshold": 0.998, "floor": 0.95, "k": 3, "ratio": 0.2}, "missed": [], "hits": {}}
    for side in ni.TUNE_SIDES:
        data = ni.photo_set(ni.TUNE_PHOTOS, side, 0)
        for fam in ("shift", "crop", "border"):
            view = ni.family_view(data, fam)
            v = view_descriptors(torch.from_numpy(view.images), match)
            s = block_similarity(v, v, match).numpy()
            np.fill_diagonal(s, -2.0)
            kth = -np.sort(-s, axis=1)[:, match.k - 1]
            gap = 1 - s
            linked = (s >= match.threshold) | ((s >= match.floor) & (gap <= match.ratio * (1 - kth[:, None]))
                                               & (gap <= match.ratio * (1 - kth[None, :])))
            groups = components(len(s), *np.nonzero(np.triu(linked, 1)))
            orig = {int(g): i for i, (g, f) in enumerate(zip(view.group, view.family)) if f == "original"}
            hit_sims = []
            for c in np.flatnonzero(view.family != "original"):
                o = orig[int(view.group[c])]
                if groups[c] >= 0 and groups[c] == groups[o]:
                    hit_sims.append(float(s[c, o]))
                    continue
                ab = (v[c, :len(wins)] @ v[o, anchors].T).numpy()
                ba = (v[o, :len(wins)] @ v[c, anchors].T).numpy()
                best, searcher = (ab, "copy") if ab.max() >= ba.max() else (ba, "original")
                sv, av = np.unravel_index(best.argmax(), best.shape)
                out["missed"].append({"side": side, "family": fam, "amount": float(view.amount[c]),
                                      "best_view_similarity": float(best.max()), "kth_best": float(kth[c]),
                                      "rank_of_original": int((s[c] > s[c, o]).sum()),
                                      "search_window_of": searcher, "search_window": wins[sv],
                                      "anchor_window": wins[anchors[av]]})
            out["hits"][f"{side}/{fam}"] = {"n": len(hit_sims), "min_view_similarity": min(hit_sims)}
    return out


#: Window-size grids compared on the tuning split (`--scales`): the default and finer/wider ones.
SCALE_GRIDS = ((0.9, 0.8), (0.9, 0.85, 0.8), (0.9, 0.85, 0.8, 0.75))


def scale_grid(grids: tuple[tuple[float, ...], ...] = SCALE_GRIDS) -> dict:
    """Per window-size grid (ViewMatch.scales, the rule kept at its defaults): recall and precision per CORE
    family on the tuning split (TUNE_PHOTOS at TUNE_SIDES, seed 0), all pairs, and the worst min of the two."""
    out = {}
    for scales in grids:
        match = replace(ViewMatch(), scales=tuple(scales))
        cells: dict = {}
        for side in ni.TUNE_SIDES:
            data = ni.photo_set(ni.TUNE_PHOTOS, side, 0)
            for fam in CORE:
                view = ni.family_view(data, fam)
                t = time.perf_counter()
                i, j, _ = view_pairs(torch.from_numpy(view.images), match)
                q = ni.quality(components(len(view.images), i, j), view.group, view.family)
                cells[f"{side}/{fam}"] = {**q, "seconds": time.perf_counter() - t}
        worst = min(min(c["recall"] or 0.0, c["precision"]) for c in cells.values())
        out[",".join(map(str, scales))] = {"worst_min_recall_precision": worst, "cells": cells}
        print(scales, round(worst, 3), {k: round(c["recall"], 2) for k, c in cells.items() if "crop" in k or "shift" in k},
              file=sys.stderr, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default=",".join(map(str, HELD_OUT_SEEDS)))
    p.add_argument("--methods", default="views,views_index,tiles,imagehash,imagededup,cleanlab")
    p.add_argument("--tune", action="store_true", help="also rerun the tuning grid")
    p.add_argument("--sides", default=",".join(map(str, (*ni.SIDES, 8))), help="held-out sides (8: the digits)")
    p.add_argument("--families", default=",".join(ni.FAMILIES), help="planted families (crop: crops only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON written (default: the table of record)")
    p.add_argument("--scales", action="store_true", help="only compare SCALE_GRIDS on the tuning split")
    p.add_argument("--diagnose", action="store_true", help="only the previous view rule's misses (tuning split)")
    p.add_argument("--tune-only", action="store_true", help="only the rule grid on the tuning split")
    p.add_argument("--tune-texture", action="store_true", help="only ViewMatch.texture on the tuning split")
    p.add_argument("--tune-refine", action="store_true", help="only the aligned check's scale refinement, "
                   "threshold, texture and nearest-neighbour proposals on the tuning split")
    p.add_argument("--tune-zoom", action="store_true", help="only the aligned check's zoom blur, resampling, "
                   "threshold and nearest-neighbour proposals on both tuning sets")
    p.add_argument("--tune-match", action="store_true", help="only the matched-resolution blurs of the aligned "
                   "overlap and the threshold on both tuning sets")
    p.add_argument("--tune-corners", action="store_true", help="only the index's corner codes on both tuning sets")
    args = p.parse_args()
    if args.scales:
        torch.set_num_threads(args.threads)
        args.out.write_text(json.dumps({"split": "TUNE_PHOTOS at TUNE_SIDES, seed 0", "grids": scale_grid()},
                                       indent=1))
        return
    torch.set_num_threads(args.threads)
    single_grids = {"tune_texture": tune_texture, "tune_refine": tune_refine, "tune_zoom": tune_zoom,
                    "tune_corners": tune_corners, "tune_match": tune_match}
    for flag, grid in single_grids.items():  # the first flag given runs alone
        if getattr(args, flag):
            args.out.write_text(json.dumps(grid(), indent=1))
            return
    if args.diagnose or args.tune_only:
        args.out.write_text(json.dumps(diagnose() if args.diagnose else tune(), indent=1, default=str))
        return
    seeds = tuple(int(s) for s in args.seeds.split(","))
    result = {"split": {"tune": {"photos": ni.TUNE_PHOTOS, "sides": ni.TUNE_SIDES, "seeds": TUNE_SEEDS},
                        "held_out": {"photos": ni.HELD_OUT_PHOTOS, "sides": ni.SIDES, "digits": True,
                                     "seeds": seeds}},
              "lfw": "not included: sklearn's fetch_lfw_people needs a download (offline here)",
              "view_match": asdict(ViewMatch()), "hamming_threshold": HAMMING}
    if args.tune:
        result["tuning"] = tune()
    result["held_out"] = held_out(args.methods.split(","), seeds, tuple(int(x) for x in args.sides.split(",")),
                                  tuple(args.families.split(",")))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    for m, sides in result["held_out"].items():
        print(m)
        for side, fams in sides.items():
            print(f"  {side:>4}", " ".join(f"{f[:5]}={c['recall'] or 0:.2f}/{c['precision']:.2f}"
                                           for f, c in fams.items()))


if __name__ == "__main__":
    main()
