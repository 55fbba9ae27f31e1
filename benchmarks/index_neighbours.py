"""How many nearest codes each anchor keeps, and which anchors query, beside the index's corner codes (issue 14,
session 17): code_candidates.CORNER_ANCHOR_K and code_candidates.code_windows.

Tuning split (`tune`): natural_images.TUNE_PHOTOS and TEXTURE_TUNE_PHOTOS at 32 and 128 px, planting seeds 0, 10,
11, every family but flips; per setting (querying anchors, neighbours per anchor code; corner codes keep
CORNER_K), the share of the all-pairs links (view_search.view_pairs) among the index's candidates
(code_candidates on the index's own codes, faiss IVF as the index runs it) and the candidates per image.
Development set (`dev`): findings_scale's synthetic images (2% planted copies: shifts, JPEG, brightness; seed
N), the planted copies among the candidates and the candidates per image. The held-out photos are never used
here (duplicates_natural.py reports them).

Output: benchmarks/results/index_neighbours.json. Run: python benchmarks/index_neighbours.py [--dev-n 100000]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import findings_scale as fs  # noqa: E402
import natural_images as ni  # noqa: E402

from influencegate.findings.code_candidates import CORNER_K, code_candidates  # noqa: E402
from influencegate.findings.duplicate_index import ViewIndex  # noqa: E402
from influencegate.findings.view_search import view_pairs  # noqa: E402
from influencegate.findings.views import ViewMatch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "index_neighbours.json"
#: (anchor windows that query, by name; neighbours per anchor code). The index's views hold the anchors whole
#: (1.0), 0.9 and 0.8 (centred), then the 4 corner windows.
ANCHORS = {"1.0+0.9+0.8": (0, 1, 2), "1.0+0.8": (0, 2), "1.0+0.9": (0, 1), "1.0": (0,)}
SETTINGS = [(a, k) for a in ANCHORS for k in (4, 6, 10)]
FAMILIES = ("crop", "shift", "jpeg", "resize", "border", "brightness")


def all_codes(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """N x 7 x 64 float16: the three anchors' and the four corner windows' codes of the index's views."""
    idx = ViewIndex(ViewMatch())
    # every view of the index's pass gives a code here (the index itself codes code_windows' only)
    idx._code_windows, idx._code_rows = idx._view_windows, list(range(len(idx._view_windows)))
    try:
        for s in range(0, len(images), 1024):
            idx.add(images[s:s + 1024])
        return idx._float16_codes()
    finally:
        idx.close()


def candidates(codes: np.ndarray, setting: tuple[str, int]) -> tuple[np.ndarray, np.ndarray]:
    anchors, k = setting
    return code_candidates(codes[:, [*ANCHORS[anchors], 3, 4, 5, 6]], k, "faiss-ivf", extra_k=(CORNER_K,) * 4)


def tune() -> dict:
    out = {f"{a}/{k}": {"links": 0, "in_candidates": 0, "candidates": 0, "images": 0, "missed": []}
           for a, k in SETTINGS}
    for name, photos in (("tune", ni.TUNE_PHOTOS), ("texture", ni.TEXTURE_TUNE_PHOTOS)):
        for side in (32, 128):
            for seed in (0, 10, 11):
                data = ni.photo_set(photos, side, seed)
                for fam in FAMILIES:
                    view = ni.family_view(data, fam)
                    x = torch.from_numpy(view.images)
                    li, lj, _ = view_pairs(x)
                    links, codes = set(zip(li.tolist(), lj.tolist())), all_codes(x)
                    for a, k in SETTINGS:
                        ci, cj = candidates(codes, (a, k))
                        row, missed = out[f"{a}/{k}"], links - set(zip(ci.tolist(), cj.tolist()))
                        row["links"] += len(links)
                        row["in_candidates"] += len(links) - len(missed)
                        row["candidates"] += len(ci)
                        row["images"] += len(x)
                        row["missed"] += [f"{name}/{side}/{fam}/{seed}"] * len(missed)
                print(f"tune: {name} {side} px seed {seed}", file=sys.stderr, flush=True)
    for row in out.values():
        row["candidates_per_image"] = row["candidates"] / row["images"]
    return out


def dev(n: int) -> dict:
    copies, originals = fs.planting(n, seed=n)
    images = fs.GeneratedImages(n, copies, originals, seed=n)
    codes = all_codes(images)
    planted = np.minimum(copies, originals) * n + np.maximum(copies, originals)
    out = {}
    for a, k in SETTINGS:
        ci, cj = candidates(codes, (a, k))
        out[f"{a}/{k}"] = {"candidates_per_image": len(ci) / n,
                           "planted_recall": float(np.isin(planted, ci * n + cj).mean())}
        print(f"dev {a}/{k}: {out[f'{a}/{k}']}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dev-n", type=int, default=100_000)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"corner_k": CORNER_K, "anchors": ANCHORS, "tune": tune(), f"dev_{args.dev_n}": dev(args.dev_n)}
    args.out.write_text(json.dumps(result, indent=1))
    for part in ("tune", f"dev_{args.dev_n}"):
        for key, row in result[part].items():
            print(part, key, {k: v for k, v in row.items() if k != "missed"})


if __name__ == "__main__":
    main()
