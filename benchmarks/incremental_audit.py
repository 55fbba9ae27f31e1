"""Incremental audit of an appended dataset version against a full audit of it (issue 15, item 4).

For each setting: the previous version is the first 90% of the samples (fit + score, default config), the new
version all of them (+11%). Timed side by side in one process, `--repeats` times: the full audit of the new
version (fit + score) and the incremental one (`influence.incremental.score_appended`: the new samples'
curvature sums added to the previous fit, the new samples scored, a re-check of RECHECK_SAMPLES old ones).
Reported: time ratio (median and range), Spearman of the incremental table with the full one, the largest
relative difference on the new samples, and whether the old scores were kept.
Settings: digits_simclr_s0 (the incremental rule's defaults were set here) and sklearn_patches_byol_s5 (held
out), the encoders of benchmarks/noise_stability.py (trained there once, kept in --encoder-cache).

Usage: python benchmarks/incremental_audit.py [--repeats 3] [--settings ...] [--out incremental_audit.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.noise_stability import HELD_OUT, SETTINGS, dataset_for, encoder_for  # noqa: E402
from influencegate import InfluenceConfig, InfluenceScorer  # noqa: E402
from influencegate.influence import spearman  # noqa: E402
from influencegate.influence.fit_state import fit_state, restore_fit  # noqa: E402
from influencegate.influence.incremental import score_appended  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def one_setting(setting: str, repeats: int, epochs: int, cache: Path) -> dict:
    data = dataset_for(SETTINGS[setting][0])
    encoder = encoder_for(setting, data, epochs, cache)
    previous = data.subset(data.sample_ids[: int(0.9 * len(data))])
    config = InfluenceConfig(progress=False)
    before = InfluenceScorer(encoder, config).fit(previous)
    state, table = fit_state(before), before.score(previous)
    full_s, incremental_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        full = InfluenceScorer(encoder, config).fit(data).score(data)
        full_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        scorer = InfluenceScorer(encoder, config)
        restore_fit(scorer, state)
        got, report = score_appended(scorer, data, table)
        incremental_s.append(time.perf_counter() - start)
    ratios = [i / f for i, f in zip(incremental_s, full_s)]
    new = ~got["sample_id"].isin(previous.sample_ids)
    relative = (got.loc[new, "influence"] - full.loc[new, "influence"]).abs() / full.loc[new, "influence"].abs()
    return {"setting": setting, "held_out": setting in HELD_OUT, "previous": len(previous), "version": len(data),
            "full_seconds": full_s, "incremental_seconds": incremental_s,
            "time_ratio_median": statistics.median(ratios), "time_ratio_range": [min(ratios), max(ratios)],
            "spearman_with_full": spearman(got["influence"].to_numpy(), full["influence"].to_numpy()),
            "new_samples_max_relative_difference": float(np.max(relative)),
            "recheck_spearman": report.recheck_spearman, "kept_old_scores": report.kept_old_scores,
            "score_draws_previous_fit": int(before.score_draws)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settings", default="digits_simclr_s0,sklearn_patches_byol_s5")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--encoder-cache", default="/tmp/influencegate_encoders")
    p.add_argument("--out", default="incremental_audit.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    RESULTS.mkdir(exist_ok=True)
    for setting in args.settings.split(","):  # written after every setting, so a stopped run keeps what finished
        rows.append(one_setting(setting, args.repeats, args.epochs, Path(args.encoder_cache)))
        print(json.dumps(rows[-1]), flush=True)
        (RESULTS / args.out).write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
