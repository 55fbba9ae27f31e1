"""Memory and time of the all-pairs near-duplicate search (view_search.view_pairs) and of the Duplicates finding
on that path, per N (issue 14: the all-pairs path must not take a user's machine down).

Sets (each N in its own subprocess, so that peak RSS = that run's ru_maxrss, imports included):
  * smooth: findings_scale's synthetic 32 x 32 colour images (smooth random fields, 2% planted copies:
    shift 1-3 px, JPEG 30-90, brightness/contrast; planting seed N), the images of its exhaustive part;
  * photos: 32 x 32 windows of the natural photos of benchmarks/natural_images.py (all PHOTOS plus china and
    flower, each photo at 1x, 1/2x and 1/4x), at uniformly random positions (seed N), no flat-patch filter
    (smooth sky and page patches stay: they are what makes the views propose many pairs), 2% of them replaced
    by a planted copy of another row (natural_images._copy: shift, crop, jpeg, resize, brightness, border,
    watermark; cut from the same photo).
Per run: images generated first (not timed), then view_pairs (or, with --finding, Duplicates(matcher="views",
search="exact").find as a user calls it) timed; proposed pairs (view similarity >= ViewMatch.propose), pairs
aligned, most pairs held at once, links, peak RSS (MB) and RSS before the search. --save writes the links
to results/allpairs_links_<set>_<N>.npz (git-ignored) to compare implementations.

Output: benchmarks/results/allpairs_memory.json (rows replaced per (set, N, part)).
Run: python benchmarks/allpairs_memory.py [--sets smooth,photos] [--ns 2000,5000,10000] [--finding 2000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "allpairs_memory.json"
SIDE = 32
ZOOMS = (1.0, 0.5, 0.25)


def photo_windows(n: int, seed: int) -> np.ndarray:
    """n x 3 x SIDE x SIDE float32 in [0, 1]: random windows of the natural photos (module docstring), 2% of
    the rows replaced by a planted copy of another row's window."""
    from PIL import Image
    from natural_images import FAMILIES, PHOTOS, _arr, _copy, _pil, load_photo
    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS + ("china", "flower"):
        img = load_photo(name)
        for z in ZOOMS:
            h, w = int(img.shape[0] * z), int(img.shape[1] * z)
            photos.append(img if z == 1.0 else _arr(_pil(img).resize((w, h), Image.BILINEAR)))
    pick = rng.integers(len(photos), size=n)
    out = np.empty((n, SIDE, SIDE, 3), np.float32)
    places = []
    for r, p in enumerate(pick):
        m = int(np.ceil(0.1 * SIDE))  # room for a shifted copy cut from the photo
        y = int(rng.integers(m, photos[p].shape[0] - SIDE - m))
        x = int(rng.integers(m, photos[p].shape[1] - SIDE - m))
        out[r] = photos[p][y:y + SIDE, x:x + SIDE]
        places.append((p, y, x))
    n_copy = int(0.02 * n)
    copies = rng.choice(n, n_copy, replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(n), copies), n_copy, replace=False)
    kinds = [f for f in FAMILIES if f != "flip"]
    for c, o in zip(copies, originals):
        p, y, x = places[o]
        out[c] = _copy(str(rng.choice(kinds)), out[o].astype(np.float64), photos[p], y, x, rng)[0]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def images_of(kind: str, n: int) -> np.ndarray:
    """The n images of set `kind` (module docstring)."""
    if kind == "smooth":
        from findings_scale import image_batch, planting
        copies, originals = planting(n, seed=n)
        return image_batch(0, n, copies, originals, seed=n)
    if kind == "photos":
        return photo_windows(n, seed=n)
    raise ValueError(f"set must be smooth or photos, got {kind!r}")


def run(kind: str, n: int, part: str, save: bool) -> dict:
    """One (set, n, part) in this process: the row of the results file."""
    import pandas as pd
    import torch
    from influencegate.findings.duplicates import Duplicates
    from influencegate.findings.view_search import view_pairs
    images = torch.from_numpy(images_of(kind, n))
    out = {"set": kind, "n": n, "part": part,
           "rss_before_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    counts: dict = {}
    t = time.perf_counter()
    if part == "view_pairs":
        i, j, s = view_pairs(images, counts=counts)
        out["links"] = int(len(i))
        if save:
            np.savez(RESULTS / f"allpairs_links_{kind}_{n}.npz", i=i, j=j, s=s)
    else:
        table = pd.DataFrame({"sample_id": [str(r) for r in range(n)]})
        found = Duplicates(matcher="views", search="exact", view_exact_max_samples=n).find(table, images=images)
        out["duplicates"] = int(found["is_duplicate"].sum())
    out["seconds"] = time.perf_counter() - t
    out.update(counts)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sets", default="smooth,photos")
    p.add_argument("--ns", default="2000,5000,10000")
    p.add_argument("--finding", default="2000", help="N for the Duplicates finding on the all-pairs path")
    p.add_argument("--save", action="store_true", help="write each view_pairs run's links (npz)")
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # set, n, part: run here, print JSON
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    if args.one:
        kind, n, part = args.one
        print(json.dumps(run(kind, int(n), part, args.save)))
        return
    data = json.loads(OUT.read_text()) if OUT.exists() else {"threads": 1}  # other keys (notes, "before") kept
    rows = data.get("runs", [])
    jobs = [(k, int(n), "view_pairs") for k in args.sets.split(",") for n in args.ns.split(",") if n]
    jobs += [(k, int(n), "finding") for k in args.sets.split(",") for n in args.finding.split(",") if n]
    for kind, n, part in jobs:
        cmd = [sys.executable, __file__, "--one", kind, str(n), part] + (["--save"] if args.save else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        row = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else
               {"set": kind, "n": n, "part": part, "error": f"exit {done.returncode}: {done.stderr[-1500:]}"})
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows = [r for r in rows if (r["set"], r["n"], r["part"]) != (kind, n, part)] + [row]
        data["runs"] = sorted(rows, key=lambda r: (r["set"], r["part"], r["n"]))
        OUT.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
