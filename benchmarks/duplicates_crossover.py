"""Which matcher below which image side: the tiles (pixel) matcher vs the multi-view matcher on small photo
patches (issue 14; sets Duplicates' PIXEL_MAX_SIDE).

Choice on the tuning split only (TUNE_PHOTOS, seed 0) at sides CROSS_SIDES (12, 16, 24 px: between the digits'
8 px, where tiles win, and 32 px, where views win on the held-out table); reported on HELD_OUT_PHOTOS at the
same sides, seeds 1 and 2. Per side and matcher: recall and precision per CORE family (duplicates_natural.py's
sets and quality), and the worst min(recall, precision) over those families, the criterion.

Output: benchmarks/results/duplicates_crossover.json. Run: python benchmarks/duplicates_crossover.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import natural_images as ni  # noqa: E402
from duplicates_natural import CORE, components, pool, run_method  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "duplicates_crossover.json"
CROSS_SIDES = (12, 16, 24)
MATCHERS = ("tiles", "views")


def table(photos: tuple[str, ...], seeds: tuple[int, ...]) -> dict:
    """{side: {matcher: {family: pooled quality, "worst": worst min(recall, precision)}}}."""
    out: dict = {}
    for side in CROSS_SIDES:
        cells: dict = {m: {f: [] for f in CORE} for m in MATCHERS}
        for seed in seeds:
            data = ni.photo_set(photos, side, seed)
            for fam in CORE:
                view = ni.family_view(data, fam)
                for m in MATCHERS:
                    i, j = run_method(m, view)
                    q = ni.quality(components(len(view.images), i, j), view.group, view.family)
                    cells[m][fam].append({**q, "seconds": 0.0, "n_images": len(view.images)})
        out[str(side)] = {}
        for m in MATCHERS:
            fams = {f: pool(c) for f, c in cells[m].items()}
            worst = min(min(c["recall"] or 0.0, c["precision"]) for c in fams.values())
            out[str(side)][m] = {**fams, "worst": worst}
        print(side, {m: round(out[str(side)][m]["worst"], 3) for m in MATCHERS}, file=sys.stderr, flush=True)
    return out


def main() -> None:
    torch.set_num_threads(1)
    tune = table(ni.TUNE_PHOTOS, (0,))
    held = table(ni.HELD_OUT_PHOTOS, (1, 2))
    RESULTS.write_text(json.dumps({"sides": CROSS_SIDES, "criterion": "worst min(recall, precision) over CORE",
                                   "tune": {"photos": ni.TUNE_PHOTOS, "seeds": [0], "table": tune},
                                   "held_out": {"photos": ni.HELD_OUT_PHOTOS, "seeds": [1, 2], "table": held}},
                                  indent=1))
    for name, t in (("tune", tune), ("held_out", held)):
        for side, ms in t.items():
            for m, fams in ms.items():
                print(name, side, m, " ".join(f"{f[:5]}={c['recall'] or 0:.2f}/{c['precision']:.2f}"
                                              for f, c in fams.items() if f != "worst"))


if __name__ == "__main__":
    main()
