"""How the size of the clean reference set drives ECIF's misalignment ranking (issue 5, item 4).

Same setup as benchmarks/ecif_quality.py (1,200 training pairs of scikit-learn digits, 20% of their captions
shuffled to name another digit, MiniLM text features, EcifConfig defaults), except that every digit not used
for training is a clean reference pair (597; the SimCLR image encoder is trained on all 1,797 images). The
dual encoder is fitted once per seed; it is then scored against nested random subsets of the reference set
(its first 50, 100, 200, 400 and 597 pairs; the reference order is the seeded split's permutation).

Per size: AUROC of misalignment_score (and of its positive part alone) for the shuffled pairs, the
CLIP-score baseline (-clip_score, which does not depend on the reference), and what is_misaligned flags
(fraction, precision): the flag threshold is calibrated on the reference pairs (``ecif.combined``; the JSON
of record predates it: then the flag_alpha quantile of their CLIP scores), so it is estimated from the
reference too.

Run: python benchmarks/ecif_reference_size.py [--seeds 0,1,2]. Writes benchmarks/results/ecif_reference_size.json.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from sklearn.metrics import roc_auc_score

from ecif_quality import N_TRAIN, RESULTS, make_split, summarise
from influencegate.ecif import EcifConfig, EcifScorer, PairSet

SIZES = (50, 100, 200, 400, 597)


def reference_prefix(reference: PairSet, size: int) -> PairSet:
    """The first ``size`` reference pairs."""
    return PairSet(reference.sample_ids[:size], reference.captions[:size], reference.images[:size])


def sweep(seed: int, config: EcifConfig, pretrain_epochs: int) -> list[dict]:
    """One row per reference size for one seed."""
    split = make_split(seed, pretrain_epochs, n_reference=max(SIZES))
    bad = split["bad"]
    scorer = EcifScorer(config, image_encoder=split["encoder"]).fit(split["pairs"])
    rows = []
    for size in SIZES:
        start = time.perf_counter()
        table = scorer.score(reference_prefix(split["reference"], size)).iloc[: len(bad)]
        flagged = table["is_misaligned"].to_numpy()
        rows.append({
            "reference_size": size,
            "score_seconds": time.perf_counter() - start,
            "auroc_ecif": float(roc_auc_score(bad, table["misalignment_score"])),
            "auroc_positive_only": float(roc_auc_score(bad, -table["positive_if"])),
            "auroc_clip_score": float(roc_auc_score(bad, -table["clip_score"])),
            "flagged_fraction": float(flagged.mean()),
            "flagged_precision": float(bad[flagged].mean()) if flagged.any() else float("nan"),
            "flag_threshold": scorer.flag_rule.get("flag_threshold"),
        })
        print(json.dumps({"seed": seed, **rows[-1]}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    config = EcifConfig(progress=False)
    runs = {seed: sweep(seed, config, args.pretrain_epochs) for seed in seeds}
    keys = ["auroc_ecif", "auroc_positive_only", "auroc_clip_score", "flagged_fraction", "flagged_precision"]
    summary = {str(size): summarise([next(r for r in rows if r["reference_size"] == size) for rows in runs.values()], keys)
               for size in SIZES}
    out = {"config": config.to_params(), "seeds": seeds, "n_train": N_TRAIN, "sizes": list(SIZES),
           "torch_threads": torch.get_num_threads(), "runs": {str(k): v for k, v in runs.items()}, "summary": summary}
    print(json.dumps({size: {k: round(v["mean"], 4) for k, v in s.items()} for size, s in summary.items()}, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ecif_reference_size.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
