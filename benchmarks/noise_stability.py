"""Ranking stability between perturbation seeds per noise design and number of draws (issue 15, item 2).

For each setting (an encoder pretrained on a dataset), each noise design and each K: two full runs (fit +
score) with perturbation seeds 0 and 1, and the Spearman between their influence; the cost is the draws
each image goes through (fit draws + K), as InfluenceScorer runs them, and the wall seconds of one run.
Settings: digits_simclr_s0 is where designs were chosen (tuning); digits_byol_s1 (another SSL method and
seed) and patches_simclr_s2 (32 x 32 RGB patches of scikit-image photographs) are held out, and
sklearn_patches_byol_s5 (patches of scikit-learn's two sample photographs, BYOL) was held out from every
choice of the draw rule, including its grid and margin.

Usage: python benchmarks/noise_stability.py [--noises common,orthogonal,iid] [--draws 16,24,32,64] [--targets none,0.95]
           [--settings digits_simclr_s0,...] [--epochs 20] [--encoder-cache DIR] [--out noise_stability.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.estimator_study import natural_patches  # noqa: E402
from influencegate import InfluenceConfig, InfluenceScorer  # noqa: E402
from influencegate.influence import spearman  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SETTINGS = {"digits_simclr_s0": ("digits", "simclr", 0), "digits_byol_s1": ("digits", "byol", 1),
            "patches_simclr_s2": ("patches", "simclr", 2), "sklearn_patches_byol_s5": ("sklearn_patches", "byol", 5)}
HELD_OUT = {"digits_byol_s1", "patches_simclr_s2", "sklearn_patches_byol_s5"}


def dataset_for(name: str):
    from influencegate.data import load_images

    if name == "digits":
        return load_images("digits")
    return natural_patches(1500, source="sklearn" if name == "sklearn_patches" else "skimage")


def encoder_for(setting: str, data, epochs: int, cache: Path) -> torch.nn.Module:
    """The setting's pretrained encoder, trained once and kept in `cache` (state dict)."""
    from influencegate.models import build_encoder, pretrain

    _, method, seed = SETTINGS[setting]
    encoder = build_encoder("small_cnn", seed=seed, in_channels=data.images.shape[1])
    path = cache / f"{setting}_e{epochs}.pt"
    if path.is_file():
        encoder.load_state_dict(torch.load(path, weights_only=True))
        return encoder.eval()
    encoder = pretrain(encoder, data, method=method, epochs=epochs, seed=seed, progress=False).encoder
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), path)
    return encoder.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--noises", default="common,orthogonal")
    p.add_argument("--draws", default="16,24,32,64")
    p.add_argument("--targets", default="none",
                   help="comma list of target_stability values ('none' = fixed draws); with a target, draws is "
                        "the maximum and the row reports the draws the pilot chose")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--encoder-cache", default="/tmp/influencegate_encoders")
    p.add_argument("--out", default="noise_stability.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    for setting in args.settings.split(","):
        data = dataset_for(SETTINGS[setting][0])
        encoder = encoder_for(setting, data, args.epochs, Path(args.encoder_cache))
        for noise, draws, target in ((n, int(k), None if t == "none" else float(t)) for n in args.noises.split(",")
                                     for k in args.draws.split(",") for t in args.targets.split(",")):
            base = InfluenceConfig(progress=False, noise=noise, draws=draws, target_stability=target)
            runs = []
            for seed in (0, 1):
                start = time.perf_counter()
                scorer = InfluenceScorer(encoder, replace(base, seed=seed)).fit(data)
                runs.append((scorer.score(data)["influence"].to_numpy(), time.perf_counter() - start, scorer))
            chosen = [r[2].score_draws for r in runs]
            row = {"setting": setting, "held_out": setting in HELD_OUT, "n": len(data), "noise": noise,
                   "draws": draws, "target_stability": target, "score_draws_per_seed": chosen,
                   "predicted": {str(k): v for k, v in runs[0][2].draw_predictions.items()},
                   "predicted_q10": {str(k): v for k, v in runs[0][2].draw_quantiles.items()},
                   "fit_draws": runs[0][2].fit_draws, "stability": spearman(runs[0][0], runs[1][0]),
                   "seconds_per_run": [r[1] for r in runs]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps({"epochs": args.epochs, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
