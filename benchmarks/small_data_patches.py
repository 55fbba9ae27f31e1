"""The small-dataset fit (session 22, issue 15 item 3) held out on another kind of data: 600 photo patches.

The default fit takes at most half of a small dataset's samples (`SMALL_DATA_FIT_SHARE`: 300 of 600), where it
took 512 of 600 before. `default_recheck.py --stability-n 600` checked it on the digits; this checks it on data
it was not chosen on: N = 600 RGB 32 x 32 patches of scikit-image's photographs (`natural_patches`, patch seed
41, which no earlier run used), scored by SmallCNNs pretrained on 2,000 patches of their own seed (session 21's
held-out encoders: SimCLR seed 21, BYOL seed 22, 10 epochs). Per encoder, the library default ("new") and the
same default with the cap off ("old": SMALL_DATA_FIT_SHARE = 1, i.e. 512 samples) on perturbation seeds 0 and 1:
- fidelity: Spearman of each seed-0 score against exact_self_influence(block_diagonal=False) on all K = 64 draws;
- stability: Spearman between seeds 0 and 1 (the draws pilot chooses K as in the library);
- fit and score CPU seconds (time.process_time, one thread, side by side per seed).
The acceptance rule is the one committed for the digits (821441c): fidelity >= 0.9, stability within 0.01 of
"old". Run: python benchmarks/small_data_patches.py  (JSON: benchmarks/results/small_data_patches.json)
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.default_recheck import fitted_scores  # noqa: E402
from benchmarks.estimator_study import natural_patches  # noqa: E402
from influencegate import InfluenceConfig, exact_self_influence  # noqa: E402
from influencegate.influence import config as config_module  # noqa: E402
from influencegate.influence import per_sample_gradients, spearman  # noqa: E402
from influencegate.models import build_encoder, pretrain  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "small_data_patches.json"
ENCODERS = (("simclr", 21), ("byol", 22))
N, PATCH_SEED, EPOCHS = 600, 41, 10


def patch_encoder(method: str, seed: int) -> torch.nn.Module:
    """A SmallCNN pretrained with `method` on 2,000 patches of `seed` (EPOCHS epochs), as session 21's."""
    initial = build_encoder("small_cnn", seed=seed, in_channels=3)
    return pretrain(initial, natural_patches(2000, seed=seed), method=method, epochs=EPOCHS, seed=seed,
                    progress=False).encoder.eval()


def scored(encoder: torch.nn.Module, data, cfg: InfluenceConfig, share: float) -> dict:
    """default_recheck.fitted_scores of `data` with SMALL_DATA_FIT_SHARE = share (restored afterwards)."""
    kept = config_module.SMALL_DATA_FIT_SHARE
    config_module.SMALL_DATA_FIT_SHARE = share
    try:
        return fitted_scores(encoder, data, cfg)
    finally:
        config_module.SMALL_DATA_FIT_SHARE = kept


def main() -> None:
    torch.set_num_threads(1)
    new_share = config_module.SMALL_DATA_FIT_SHARE
    data = natural_patches(N, seed=PATCH_SEED)
    out: dict = dict(n=N, patch_seed=PATCH_SEED, epochs=EPOCHS, shares={"new": new_share, "old": 1.0}, encoders={})
    for method, seed in ENCODERS:
        encoder = patch_encoder(method, seed)
        base = InfluenceConfig(progress=False)
        runs = {name: {s: scored(encoder, data, replace(base, seed=s), share) for s in (0, 1)}
                for name, share in (("new", new_share), ("old", 1.0))}
        # the exact score on all K = 64 draws: the expectation both variants estimate (their pilots may keep fewer)
        grads = per_sample_gradients(encoder, data, replace(base, batch_size=128))
        exact = exact_self_influence(encoder, data, base, block_diagonal=False, gradients=grads)["influence"]
        row = {}
        for name, by_seed in runs.items():
            row[name] = dict(fidelity=spearman(by_seed[0]["scores"], exact),
                             between_seeds=spearman(by_seed[0]["scores"], by_seed[1]["scores"]),
                             **{key: [by_seed[s][key] for s in (0, 1)]
                                for key in ("fit_cpu_s", "score_cpu_s", "fit_share", "score_draws")})
        row["new_vs_old_same_seed"] = [spearman(runs["new"][s]["scores"], runs["old"][s]["scores"]) for s in (0, 1)]
        out["encoders"][f"{method}_{seed}"] = row
        print(method, seed, json.dumps(row), flush=True)
        RESULTS.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
