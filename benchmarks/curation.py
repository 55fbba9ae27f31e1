"""Does removing images by influence improve an SSL encoder? The paper's curation claim tested (issue 17).

The Influence-SSL paper (Figure 6) removes the most (and the least) influential training images, pretrains
again and reports a better (worse) linear-probe accuracy. Here, for each setting and seed s:
  1. split the labelled images into an SSL pool (2/3) and a test split (1/3), stratified (split seed s);
     a "junk" setting adds planted junk to the pool only: 5% of the final pool, a third each blank images
     (one random grey level), uniform noise and off-domain images (digits: photo patches turned grey and
     pooled to 8 x 8; patches: digits upscaled to 16 x 16 RGB);
  2. pretrain a SmallCNN on the pool without labels (``models.pretrain``, initial weights, batch order and
     augmentations from seed s; a fixed budget of STEPS optimiser steps of BATCH images, so that a smaller
     pool gets more epochs, not fewer updates) = the baseline;
  3. score the pool with the product's default scorer (``InfluenceConfig()``: the draw pilot picks K) and
     the Outliers finding (outlier_score = mean of the robust z-scores of log_influence and of the k-NN
     distance, and that k-NN distance alone);
  4. for each removal rule and fraction p, pretrain again from the same initial weights, seed and step
     budget on the pool without the removed images:
       top_influence / bottom_influence   the p highest / lowest log_influence,
       random                             a random p (seeded),
       top_outlier / top_knn              the p highest outlier_score / k-NN distance (baselines);
  5. linear probe: logistic regression on the standardised encoder outputs, fitted on the labelled clean
     pool images (all of them, removed ones included, so only the encoder differs) and evaluated on the test
     split; labels are used for nothing else.
Reported per cell: the accuracy delta vs the baseline of the same seed, mean over seeds and a 95% t-interval,
and in junk settings the share of the removed images that are planted junk.

Datasets: digits (1,797 8 x 8, label the digit) and photo patches (1,029 16 x 16 RGB patches of 20 photos,
label the source photo), as built by benchmarks/encoder_agreement.py. No choice here was tuned on these
numbers: the fractions, rules, step budget and probe were fixed before the first run.

Usage: python benchmarks/curation.py [--settings a,b] [--seeds 0,1,2,3,4] [--steps 120] [--out curation.json]
       [--manifest-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS_DIR, write_json  # noqa: E402
from benchmarks.encoder_agreement import embed, labelled_dataset, probe_accuracy  # noqa: E402
from influencegate.data import ImageDataset, denormalize  # noqa: E402
from influencegate.findings.outliers import Outliers  # noqa: E402
from influencegate.influence import InfluenceConfig, InfluenceScorer  # noqa: E402
from influencegate.models import build_encoder, pretrain  # noqa: E402

FRACTIONS = (0.02, 0.05, 0.10, 0.20)
REMOVALS = ("top_influence", "bottom_influence", "random", "top_outlier", "top_knn")
JUNK_SHARE = 0.05
JUNK_KINDS = ("blank", "noise", "off_domain")
STEPS = 120
BATCH = 256
TEST_SHARE = 1 / 3


@dataclass(frozen=True)
class Setting:
    """A dataset ("digits" | "patches"), with or without planted junk, and an SSL method."""

    name: str
    dataset: str
    junk: bool
    method: str


SETTINGS = [
    Setting("digits_junk_simclr", "digits", True, "simclr"),
    Setting("digits_simclr", "digits", False, "simclr"),
    Setting("patches_simclr", "patches", False, "simclr"),
    Setting("patches_junk_simclr", "patches", True, "simclr"),
    Setting("digits_byol", "digits", False, "byol"),
    Setting("digits_junk_byol", "digits", True, "byol"),
]


# -- data ------------------------------------------------------------------------------------------------
def junk_images(data: ImageDataset, count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """`count` junk images in data's normalised units (count // 3 of each kind, the rest off-domain) and ids
    "junk/<kind>/<j>". Off-domain: the other dataset of this module's pair (digits <-> patches)."""
    c, h, w = data.image_shape
    gen = torch.Generator().manual_seed(seed)
    per = [count // 3, count // 3, count - 2 * (count // 3)]
    blank = torch.rand(per[0], 1, 1, 1, generator=gen).expand(per[0], c, h, w)
    noise = torch.rand(per[1], c, h, w, generator=gen)
    other, _ = labelled_dataset("patches" if data.name == "digits" else "digits")
    pick = torch.randperm(len(other), generator=gen)[:per[2]]
    off = F.interpolate(denormalize(other.images[pick], other), size=(h, w), mode="bilinear", align_corners=False)
    if off.shape[1] != c:  # grey <-> RGB
        off = off.mean(dim=1, keepdim=True).expand(-1, c, -1, -1)
    pixels = torch.cat([blank, noise, off]).clamp(0, 1)
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, c, 1, 1)
    ids = [f"junk/{kind}/{j}" for kind, n in zip(JUNK_KINDS, per) for j in range(n)]
    return ((pixels - mean) / std).contiguous(), ids


@dataclass
class Split:
    """pool: the unlabelled SSL set (clean pool images, then junk); clean_ids / labels: the labelled pool
    images (probe training); test_images / test_labels: the held-out evaluation split."""

    pool: ImageDataset
    clean_ids: list[str]
    labels: np.ndarray
    test_images: torch.Tensor
    test_labels: np.ndarray


def make_split(setting: Setting, seed: int) -> Split:
    """The setting's pool (with junk if asked) and test split for `seed` (module docstring, step 1)."""
    from sklearn.model_selection import train_test_split

    data, labels = labelled_dataset(setting.dataset)
    idx = np.arange(len(data))
    pool_idx, test_idx = train_test_split(idx, test_size=TEST_SHARE, stratify=labels, random_state=seed)
    pool_idx, test_idx = np.sort(pool_idx), np.sort(test_idx)
    images = data.images[torch.from_numpy(pool_idx)]
    ids = [data.sample_ids[i] for i in pool_idx]
    clean_ids = list(ids)
    if setting.junk:
        count = int(round(JUNK_SHARE * len(pool_idx) / (1 - JUNK_SHARE)))
        junk, junk_ids = junk_images(data, count, seed)
        images, ids = torch.cat([images, junk]), ids + junk_ids
    pool = ImageDataset.from_tensors(images.contiguous(), ids, name=f"{setting.name}_pool", mean=data.mean,
                                     std=data.std)
    return Split(pool, clean_ids, labels[pool_idx], data.images[torch.from_numpy(test_idx)], labels[test_idx])


# -- training, probe, removal rules ----------------------------------------------------------------------
def train(pool: ImageDataset, method: str, seed: int, steps: int = STEPS) -> torch.nn.Module:
    """SmallCNN pretrained on `pool` from seed's initial weights for ceil(steps / steps per epoch) epochs."""
    per_epoch = max(1, len(pool) // min(BATCH, len(pool)))
    initial = build_encoder("small_cnn", seed=seed, in_channels=pool.image_shape[0])
    return pretrain(initial, pool, method=method, epochs=math.ceil(steps / per_epoch), seed=seed, batch_size=BATCH,
                    progress=False).encoder.eval()


def probe(encoder: torch.nn.Module, split: Split) -> float:
    """Test accuracy of a linear probe fitted on the labelled clean pool images (step 5)."""
    pool_x = embed(encoder, split.pool.images[:len(split.clean_ids)])
    return probe_accuracy(pool_x, split.labels, embed(encoder, split.test_images), split.test_labels)


def rankings(encoder: torch.nn.Module, pool: ImageDataset, seed: int) -> pd.DataFrame:
    """Per pool image (pool order): log_influence (default scorer), outlier_score and knn_distance."""
    scorer = InfluenceScorer(encoder, InfluenceConfig(seed=seed, progress=False)).fit(pool)
    table = scorer.score(pool)
    finding = Outliers(combine="mean")  # the rule the curation figures were measured with (default until issue 14)
    found = finding.find(table, scorer.embeddings(pool), sample_ids=pool.sample_ids)
    out = pd.DataFrame({"sample_id": table["sample_id"], "log_influence": table["log_influence"],
                        "outlier_score": found["outlier_score"], "knn_distance": finding.components["knn_distance"]})
    out.attrs["score_draws"] = scorer.score_draws
    return out


def removed_ids(table: pd.DataFrame, rule: str, fraction: float, seed: int) -> list[str]:
    """The round(fraction N) sample ids a removal rule takes out of the pool (ties broken by pool order)."""
    count = int(round(fraction * len(table)))
    if rule == "random":
        rng = np.random.default_rng([seed, int(round(fraction * 1000))])
        return table["sample_id"].iloc[np.sort(rng.choice(len(table), count, replace=False))].tolist()
    column, ascending = {"top_influence": ("log_influence", False), "bottom_influence": ("log_influence", True),
                         "top_outlier": ("outlier_score", False), "top_knn": ("knn_distance", False)}[rule]
    order = table.sort_values(column, ascending=ascending, kind="stable", na_position="last")
    return order["sample_id"].iloc[:count].tolist()


def kept_ids(table: pd.DataFrame, fractions: tuple[float, ...], seed: int) -> dict[tuple[str, float], list[str]]:
    """For each (rule, fraction): the pool's sample ids without that rule's removed ids, in pool order."""
    out = {}
    for rule in REMOVALS:
        for fraction in fractions:
            gone = set(removed_ids(table, rule, fraction, seed))
            out[(rule, fraction)] = [s for s in table["sample_id"] if s not in gone]
    return out


def write_manifest(path: Path, kept: dict[tuple[str, float], list[str]]) -> Path:
    """The kept-sample manifest as Parquet: one row (rule, fraction, sample_id) per kept image per cell."""
    rows = [(rule, fraction, sample_id) for (rule, fraction), ids in kept.items() for sample_id in ids]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["rule", "fraction", "sample_id"]).to_parquet(path, index=False)
    return path


# -- one seed, and the summary ---------------------------------------------------------------------------
def run_split(split: Split, method: str, seed: int, steps: int = STEPS, fractions: tuple[float, ...] = FRACTIONS,
              manifest: Path | None = None) -> dict[str, Any]:
    """Baseline and every (rule, fraction) accuracy on one split, with the junk share of each removed set; the
    kept-sample manifest written to `manifest` if given."""
    baseline = train(split.pool, method, seed, steps)
    table = rankings(baseline, split.pool, seed)
    kept = kept_ids(table, fractions, seed)
    if manifest is not None:
        write_manifest(manifest, kept)
    out: dict[str, Any] = {"seed": seed, "steps": steps, "n_pool": len(split.pool), "n_test": len(split.test_labels),
                           "score_draws": table.attrs["score_draws"], "baseline_accuracy": probe(baseline, split),
                           "cells": []}
    for (rule, fraction), ids in kept.items():
        accuracy = probe(train(split.pool.subset(ids), method, seed, steps), split)
        gone = set(split.pool.sample_ids) - set(ids)
        out["cells"].append({"rule": rule, "fraction": fraction, "removed": len(gone), "accuracy": accuracy,
                             "delta": accuracy - out["baseline_accuracy"],
                             "junk_share_of_removed": sum(s.startswith("junk/") for s in gone) / max(len(gone), 1)})
    return out


def run_seed(setting: Setting, seed: int, steps: int = STEPS, manifest: Path | None = None) -> dict[str, Any]:
    """`run_split` on the setting's split for `seed` (module docstring, steps 1-5)."""
    return run_split(make_split(setting, seed), setting.method, seed, steps, manifest=manifest)


def interval(deltas: list[float]) -> dict[str, float | int]:
    """n, mean, the 95% t-interval of the mean and the two-sided one-sample t-test p-value of mean 0 (NaN
    bounds and p for one value; p = 1 when every delta is 0)."""
    d = np.asarray(deltas, dtype=np.float64)
    half, p = math.nan, math.nan
    if d.size > 1:
        sd = d.std(ddof=1)
        half = stats.t.ppf(0.975, d.size - 1) * sd / math.sqrt(d.size)
        p = float(stats.ttest_1samp(d, 0.0).pvalue) if sd > 0 else 1.0
    return {"n_seeds": int(d.size), "mean": float(d.mean()), "ci95_low": float(d.mean() - half),
            "ci95_high": float(d.mean() + half), "p_value": p}


def summarise(setting: Setting, seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (rule, fraction): the delta's mean and 95% interval over seeds, and the junk share."""
    rows = []
    for rule in REMOVALS:
        for fraction in FRACTIONS:
            cells = [c for s in seeds for c in s["cells"] if c["rule"] == rule and c["fraction"] == fraction]
            row = {"setting": setting.name, "dataset": setting.dataset, "junk": setting.junk, "method": setting.method,
                   "rule": rule, "fraction": fraction, "delta": interval([c["delta"] for c in cells])}
            if setting.junk:
                row["junk_share_of_removed"] = float(np.mean([c["junk_share_of_removed"] for c in cells]))
            rows.append(row)
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    """The README table: one row per (setting, rule), one column per fraction; each cell the delta's mean and
    95% interval in accuracy points (bold where the interval excludes 0)."""
    fractions = sorted({r["fraction"] for e in results["settings"].values() for r in e["summary"]})
    lines = ["| setting | rule | " + " | ".join(f"p = {f:.0%}" for f in fractions) + " |",
             "|---|---|" + "---|" * len(fractions)]
    for name, entry in results["settings"].items():
        for rule in REMOVALS:
            cells = []
            for fraction in fractions:
                d = next(r["delta"] for r in entry["summary"] if r["rule"] == rule and r["fraction"] == fraction)
                text = f"{100 * d['mean']:+.2f} [{100 * d['ci95_low']:+.2f}, {100 * d['ci95_high']:+.2f}]"
                cells.append(f"**{text}**" if d["ci95_low"] > 0 or d["ci95_high"] < 0 else text)
            lines.append(f"| {name} | {rule} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_results(path: Path) -> dict[str, Any]:
    """The results file's content, or an empty one ({"settings": {}})."""
    return json.loads(path.read_text()) if path.is_file() else {"settings": {}}


def merge(path: Path, parts: list[Path]) -> None:
    """Add the seeds of other results files (runs split over processes) to `path`, per setting and seed, and
    recompute the summaries."""
    done = load_results(path)
    for part in parts:
        for name, entry in load_results(part)["settings"].items():
            target = done["settings"].setdefault(name, {"setting": entry["setting"], "seeds": []})
            seeds = {s["seed"]: s for s in target["seeds"]} | {s["seed"]: s for s in entry["seeds"]}
            target["seeds"] = [seeds[k] for k in sorted(seeds)]
            target["summary"] = summarise(Setting(**entry["setting"]), target["seeds"])
    write_json(path, done)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--settings", default=",".join(s.name for s in SETTINGS))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out", default="curation.json")
    p.add_argument("--merge", default=None, help="comma list of results files (in benchmarks/results) whose seeds "
                                                 "are added to --out; runs nothing")
    p.add_argument("--steps", type=int, default=STEPS, help="optimiser steps of every pretraining (baseline and "
                                                            "each removal alike); recorded per seed")
    p.add_argument("--manifest-dir", type=Path, default=None, help="write each seed's kept-sample manifest here "
                                                                    "(<setting>_seed<s>.parquet)")
    p.add_argument("--table", action="store_true", help="print the README table of --out; runs nothing")
    args = p.parse_args()
    torch.set_num_threads(1)
    out_path = RESULTS_DIR / args.out
    if args.table:
        print(markdown_table(load_results(out_path)))
        return
    if args.merge:
        merge(out_path, [RESULTS_DIR / name for name in args.merge.split(",")])
        return
    for setting in (s for s in SETTINGS if s.name in args.settings.split(",")):
        entry = load_results(out_path)["settings"].get(setting.name, {"setting": asdict(setting), "seeds": []})
        have = {s["seed"] for s in entry["seeds"]}
        for seed in (int(x) for x in args.seeds.split(",") if int(x) not in have):
            start = time.perf_counter()
            manifest = args.manifest_dir / f"{setting.name}_seed{seed}.parquet" if args.manifest_dir else None
            result = run_seed(setting, seed, args.steps, manifest)
            entry["seeds"].append(result | {"seconds": round(time.perf_counter() - start, 1)})
            entry["summary"] = summarise(setting, entry["seeds"])
            done = load_results(out_path)  # re-read: processes running other settings share the file
            done["settings"][setting.name] = entry
            done.update({"description": __doc__.split("Usage:")[0].strip(), "default_steps": STEPS, "batch": BATCH,
                         "fractions": list(FRACTIONS), "removals": list(REMOVALS)})
            write_json(out_path, done)
            print(setting.name, seed, f"baseline {entry['seeds'][-1]['baseline_accuracy']:.3f}",
                  f"{entry['seeds'][-1]['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
