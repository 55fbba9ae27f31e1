"""The curvature's fit rule at N = 10,000 photo patches: all K draws of spread samples against the first draws of
every sample (issue 15 item 2, session 15).

The default changed from "the first fit_draws draws of every sample, N x fit_draws >= 32 D" (session 13, with
inverse_rank 128; `issue_default` scores every sample with all K = 64 draws, as when issue 15 was filed,
`previous_default` adds the draws pilot, target 0.95) to "all K draws of n_fit >= 32 D / K samples spread
evenly over the dataset, the draws pilot's first among them" (with inverse_rank 256), chosen on 1,797 digits
(benchmarks/default_recheck.py). This checks the choice where it was not made: 32 x 32 RGB patches of
scikit-image's photographs (benchmarks/estimator_study's natural_patches, seed 7: other patches than any
earlier run), N = 10,000, a SmallCNN pretrained with BYOL on
2,000 other patches (seed 8), K = 64 with the draws pilot (target 0.95), perturbation seeds 0 and 1, one torch
thread. Orders: "interleaved" (patch i from photo i mod 5, as natural_patches makes them) and "by_photo" (the
same patches sorted by photo, as shards written class by class: the first 512 are all of one photo).

Per rule and order: the Spearman between the two seeds' scores; per seed, the Spearman with the other rules'
scores, the draws the pilot chose and the CPU seconds of fit and score (time.process_time; the rules run side by
side per seed). For the new rule also the median ratio new / old of the fitted samples' scores against the
others' (a sample whose own rows are in H scores lower: its leverage).
A second encoder (session 16): --method simclr --encoder-seed 9 (pretrained on 2,000 other patches of that seed),
--rules issue_default,default --reference-seeds 0: the issue-time default runs on the first seed only, side by
side with the default, as the cost reference (cost_ratio_to_issue_default); the default on both seeds.
Session 21, the draws pilot's simulated-pairs rule held out: --method simclr --encoder-seed 21 and --method byol
--encoder-seed 22 with --patch-seed 31 (10,000 patches no earlier run used), --rules issue_default,default
--reference-seeds 0 --by-photo-seeds ''; --default-seeds 2,3 --rules default for a second pair of seeds.
Session 24, the ratio estimator held out: --estimator ratio --rules issue_default,mean_default,default
--paired-rules mean_default --reference-seeds 0 --by-photo-seeds '' (rule: benchmarks/rules/ratio_estimator.md).
Output: benchmarks/results/fit_rule_scale.json. Run: nice -n 10 python benchmarks/fit_rule_scale.py [--n 10000]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.estimator_study import natural_patches  # noqa: E402
from influencegate import InfluenceConfig, InfluenceScorer  # noqa: E402
from influencegate.influence import spearman  # noqa: E402
from influencegate.influence.config import FIT_ROWS_PER_DIM  # noqa: E402
from influencegate.influence.fit_samples import spread_indices  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PHOTOS = 5  # natural_patches' scikit-image photographs, patch i from photo i mod 5
DIMENSION = 1024  # SmallCNN at rank 32: the largest layer's r_out r_in


def rules(n: int, estimator: str = "mean") -> dict[str, InfluenceConfig]:
    """The default when issue 15 was filed (first fit_draws draws of every sample, inverse_rank 128, always
    K = 64), the previous default (the same with the draws pilot, target 0.95), today's ("mean_default") and
    "default": today's with `estimator` (the rule the run is about)."""
    old_draws = min(64, math.ceil(FIT_ROWS_PER_DIM * DIMENSION / n))
    previous = InfluenceConfig(fit_draws=old_draws, inverse_rank=128, progress=False)
    return {"issue_default": replace(previous, target_stability=None), "previous_default": previous,
            "mean_default": InfluenceConfig(progress=False),
            "default": InfluenceConfig(progress=False, estimator=estimator)}


def run(encoder: torch.nn.Module, data, config: InfluenceConfig) -> dict:
    """Fit + score: scores in dataset order, CPU seconds, the draws fitted and scored, the fitted share."""
    start = time.process_time()
    scorer = InfluenceScorer(encoder, config).fit(data)
    fitted = time.process_time()
    table = scorer.score(data)
    return dict(scores=table["influence"].to_numpy(dtype=np.float64), fit_cpu_s=fitted - start,
                score_cpu_s=time.process_time() - fitted, fit_draws=scorer.fit_draws, score_draws=scorer.score_draws,
                fit_share=scorer.fit_share, pilot_expected={str(k): v for k, v in scorer.draw_predictions.items()},
                pilot_q10={str(k): v for k, v in scorer.draw_quantiles.items()})


def main() -> None:
    from influencegate.models import build_encoder, pretrain

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rules", default="previous_default,default", help="comma list of rules() names")
    parser.add_argument("--by-photo-seeds", default="0", help="seeds of the default on the photo-sorted order")
    parser.add_argument("--method", default="byol", help="the encoder's pretraining method")
    parser.add_argument("--encoder-seed", type=int, default=8, help="seed of its pretraining patches and weights")
    parser.add_argument("--reference-seeds", default="0,1",
                        help="perturbation seeds of the rules other than the default (the default runs on 0 and 1)")
    parser.add_argument("--default-seeds", default="0,1", help="the two perturbation seeds of the default")
    parser.add_argument("--patch-seed", type=int, default=7, help="seed of the scored patches (7 until session 21)")
    parser.add_argument("--estimator", default="mean", help="the estimator of the rule 'default' (session 24: ratio)")
    parser.add_argument("--paired-rules", default="",
                        help="rules besides 'default' that also run on both --default-seeds (their stability)")
    parser.add_argument("--out", default="fit_rule_scale.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    default_seeds = [int(s) for s in args.default_seeds.split(",")]
    interleaved = natural_patches(args.n, seed=args.patch_seed)
    by_photo = interleaved.subset([interleaved.sample_ids[i] for p in range(PHOTOS) for i in range(p, args.n, PHOTOS)])
    initial = build_encoder("small_cnn", seed=args.encoder_seed, in_channels=3)
    encoder = pretrain(initial, natural_patches(2000, seed=args.encoder_seed), method=args.method, epochs=args.epochs,
                       seed=args.encoder_seed, progress=False).encoder.eval()
    out: dict = dict(n=args.n, patch_seed=args.patch_seed, estimator=args.estimator,
                     encoder=f"SmallCNN, {args.method}, 2,000 patches (seed {args.encoder_seed})",
                     epochs=args.epochs, seeds=default_seeds, orders={})
    reference_seeds = {int(s) for s in args.reference_seeds.split(",")}
    paired = set(args.paired_rules.split(",")) - {""}
    interleaved_runs: dict = {}
    orders = {"interleaved": (interleaved, args.rules.split(","), tuple(default_seeds)),
              "by_photo": (by_photo, ["default"], tuple(int(s) for s in args.by_photo_seeds.split(",") if s))}
    for order, (data, names, seeds) in orders.items():
        if not seeds:
            continue
        runs = {name: {} for name in names}
        for seed in seeds:
            for name in names:  # side by side per seed
                if name != "default" and name not in paired and seed not in reference_seeds:
                    continue
                runs[name][seed] = run(encoder, data, replace(rules(args.n, args.estimator)[name], seed=seed))
                print(order, name, seed, {k: v for k, v in runs[name][seed].items() if k != "scores"}, flush=True)
        rows = {}
        for name, by_seed in runs.items():
            rows[name] = dict(seeds=sorted(by_seed), **{key: [by_seed[s][key] for s in sorted(by_seed)] for key in (
                "fit_cpu_s", "score_cpu_s", "fit_draws", "score_draws", "fit_share", "pilot_expected", "pilot_q10")})
            if len(by_seed) == 2:
                first, second = sorted(by_seed)
                rows[name]["spearman_between_seeds"] = spearman(by_seed[first]["scores"], by_seed[second]["scores"])
        if order == "by_photo":  # the same patches, another order: another spread subset and pilot
            position = {sid: i for i, sid in enumerate(interleaved.sample_ids)}
            back = np.array([position[sid] for sid in by_photo.sample_ids])
            rows["default"]["spearman_to_interleaved_same_seed"] = [
                spearman(runs["default"][s]["scores"], interleaved_runs["default"][s]["scores"][back]) for s in seeds]
        new = runs["default"]
        for other in [name for name in names if name != "default"]:
            shared = sorted(runs[other])
            rows["default"][f"spearman_to_{other}"] = [spearman(new[s]["scores"], runs[other][s]["scores"])
                                                       for s in shared]
            rows["default"][f"cost_ratio_to_{other}"] = [
                (new[s]["fit_cpu_s"] + new[s]["score_cpu_s"])
                / (runs[other][s]["fit_cpu_s"] + runs[other][s]["score_cpu_s"]) for s in shared]
        if "previous_default" in names:
            old = runs["previous_default"]
            fitted = np.zeros(args.n, dtype=bool)
            fitted[spread_indices(args.n, round(new[0]["fit_share"] * args.n))] = True
            ratio = new[0]["scores"] / old[0]["scores"]
            rows["default"]["median_ratio_to_previous"] = dict(fitted=float(np.median(ratio[fitted])),
                                                               not_fitted=float(np.median(ratio[~fitted])))
        out["orders"][order] = rows
        interleaved_runs = runs if order == "interleaved" else interleaved_runs
        (RESULTS / args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
