"""Where the fidelity is lost on the SimCLR patch encoder (session 22, issue 15; exploration, one run each).

600 photo patches of seed 41 (`natural_patches`), the SmallCNN pretrained with SimCLR on 2,000 patches of seed
21 (10 epochs, as benchmarks/small_data_patches.py), perturbation seed 0, K = 64 draws, the draws pilot off.
Spearman of each variant of the scorer against exact_self_influence with the full Fisher and with its
per-layer blocks (block_diagonal=True, what every projected scorer approximates), and its CPU seconds.
Output: printed lines (session 22's run: benchmarks/results/patch_fidelity_variants.txt, made beside a test run).
Run: python benchmarks/patch_fidelity_variants.py
"""
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.estimator_study import natural_patches  # noqa: E402
from benchmarks.small_data_patches import patch_encoder  # noqa: E402
from influencegate import InfluenceConfig, InfluenceScorer, exact_self_influence  # noqa: E402
from influencegate.influence import per_sample_gradients, spearman  # noqa: E402

VARIANTS = [("default r32", {}), ("r32 exact inverse", dict(inverse_rank=None)), ("r64", dict(rank=64)),
            ("pca r32", dict(projection="pca")), ("identity", dict(projection="identity", inverse_rank=None))]


def main() -> None:
    torch.set_num_threads(1)
    data = natural_patches(600, seed=41)
    enc = patch_encoder("simclr", 21)
    base = InfluenceConfig(progress=False, target_stability=None)
    grads = per_sample_gradients(enc, data, replace(base, batch_size=128))
    exact_full = exact_self_influence(enc, data, base, block_diagonal=False, gradients=grads)["influence"]
    exact_block = exact_self_influence(enc, data, base, block_diagonal=True, gradients=grads)["influence"]
    print("exact block vs full", spearman(exact_block, exact_full), flush=True)
    for name, kw in VARIANTS:  # columns: vs full Fisher, vs block-diagonal, CPU seconds of fit + score
        start = time.process_time()
        scores = InfluenceScorer(enc, replace(base, **kw)).fit(data).score(data)["influence"]
        print(name, round(spearman(scores, exact_full), 4), round(spearman(scores, exact_block), 4),
              round(time.process_time() - start, 1), "s", flush=True)


if __name__ == "__main__":
    main()
