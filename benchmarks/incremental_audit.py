"""Incremental audit of an appended dataset version against a full audit of it (issue 15, item 4).

For each setting: the previous version is the first 90% of the samples (fit + score, default config), the new
version all of them (+11%). Timed side by side in one process, `--repeats` times: the full audit of the new
version (fit + score) and the incremental one (`influence.incremental.score_appended`: the new samples'
curvature sums added to the previous fit, the new samples scored, a re-check of RECHECK_SAMPLES old ones).
Reported: time ratio (median and range), Spearman of the incremental table with the full one, the largest
relative difference on the new samples, and whether the old scores were kept.
Settings: digits_simclr_s0 (the incremental rule's defaults were set here) and sklearn_patches_byol_s5 (held
out), the encoders of benchmarks/noise_stability.py (trained there once, kept in --encoder-cache).

With --pipeline: the same through `influencegate audit` (dataset_audit_pipeline on the local ZenML stack,
MLflow, gate; the packaged default config), on the digits written as 1,797 8 x 8 PNGs: the previous version's
folder holds the first 90% (audited once with --resume-dir), the new version all of them. Per repeat,
interleaved: a full audit of the new version, then an incremental one (--since the previous version's
directory); both keep their run with --resume-dir, as a chain of versions would. Reported: pipeline wall
seconds and CPU seconds (this process; the local orchestrator runs the steps in it) and their ratios, wall
seconds per step, the scoring step's seconds and ratio, Spearman of the incremental table with the full
one of the same repeat, the findings' agreement with it (findings_agreement), and the MLflow run's incremental
metrics. Then the floor: an incremental audit of the previous version itself (no new sample), what the
pipeline costs however few samples are new. Written to incremental_audit_pipeline.json.

Usage: python benchmarks/incremental_audit.py [--repeats 3] [--settings ...] [--out incremental_audit.json]
       python benchmarks/incremental_audit.py --pipeline [--repeats 3] [--work /tmp/incremental_pipeline]
"""
from __future__ import annotations

import argparse
import json
import os
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


def findings_agreement(full, incremental, new_ids) -> dict:
    """The incremental findings table against a full audit's (pandas tables indexed alike by sample_id, with the
    findings' columns): Spearman of outlier_score (all rows), the flagged outliers' Jaccard overlap, and for the
    duplicate groups: the share of new samples whose group (the set of its co-members) is the full audit's,
    and the share of all samples with the same group."""
    from scipy.stats import spearmanr

    full, incremental = full.set_index("sample_id"), incremental.set_index("sample_id").loc[full["sample_id"]]

    def members(table) -> dict:
        grouped = table[table["duplicate_group"] >= 0]
        sets = grouped.groupby("duplicate_group").groups
        return {sid: frozenset(sets[g]) for sid, g in grouped["duplicate_group"].items()}

    a, b = members(full), members(incremental)
    same = [a.get(s, frozenset()) == b.get(s, frozenset()) for s in full.index]
    new = full.index.isin(list(new_ids))
    flagged_a, flagged_b = set(full.index[full["is_outlier"]]), set(incremental.index[incremental["is_outlier"]])
    union = flagged_a | flagged_b
    return {"outlier_score_spearman": float(spearmanr(full["outlier_score"], incremental["outlier_score"],
                                                      nan_policy="omit").statistic),
            "outlier_score_max_abs_difference": float((full["outlier_score"] - incremental["outlier_score"]).abs().max()),
            "outliers_flagged": [len(flagged_a), len(flagged_b)],
            "outliers_jaccard": len(flagged_a & flagged_b) / len(union) if union else 1.0,
            "duplicate_groups": [int(full["duplicate_group"].max() + 1), int(incremental["duplicate_group"].max() + 1)],
            "new_samples_same_group": float(np.mean(np.asarray(same)[new])) if new.any() else 1.0,
            "all_samples_same_group": float(np.mean(same))}


def _digits_folder(folder: Path, count: int) -> Path:
    """The first `count` digits as 8 x 8 grayscale PNGs (img_0000.png ...) in `folder`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(load_digits().images[:count]):
        Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").save(folder / f"img_{i:04d}.png")
    return folder


def _audit(argv: list[str], run_dir: Path) -> dict:
    """Run `influencegate audit` in this process (the local orchestrator runs its steps here): {exit, seconds
    (wall), cpu_seconds (this process, all threads), steps (wall seconds per step, from the ZenML store),
    metrics of its MLflow run, scores}."""
    import pandas as pd
    from zenml.client import Client

    from influencegate.cli import main as cli
    from influencegate.integrations.mlflow import read_run

    start, cpu = time.perf_counter(), time.process_time()
    code = cli(["audit", *argv, "--run-dir", str(run_dir)])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    run = Client().list_pipeline_runs(sort_by="desc:created", size=1).items[0]
    steps = {name: (step.end_time - step.start_time).total_seconds() for name, step in run.steps.items()}
    return {"exit": code, "seconds": seconds, "cpu_seconds": cpu_seconds, "steps": steps,
            "metrics": read_run(run_dir)["metrics"],
            "scores": pd.read_parquet(run_dir / "artifacts" / "scores" / "scores.parquet")}


def pipeline_setting(repeats: int, epochs: int, cache: Path, work: Path) -> dict:
    """Full vs incremental `influencegate audit` of the +11% digits version (module docstring)."""
    import shutil

    from influencegate.models import save_encoder

    shutil.rmtree(work, ignore_errors=True)
    os.environ.update({"ZENML_CONFIG_PATH": str(work / "zenml"), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
                       "ZENML_LOGGING_VERBOSITY": "WARN"})
    data = dataset_for("digits")
    checkpoint = save_encoder(encoder_for("digits_simclr_s0", data, epochs, cache), work / "encoder.pt", "small_cnn",
                              {"in_channels": 1}, {"setting": "digits_simclr_s0", "epochs": epochs})
    folder = _digits_folder(work / "digits", int(0.9 * len(data)))
    base = ["--set", f"dataset.source={folder}", "--set", "dataset.image_size=8", "--set", "dataset.channels=1",
            "--set", "dataset.name=digits_versions", "--set", f"encoder.checkpoint={checkpoint}"]
    previous = _audit([*base, "--resume-dir", str(work / "v1")], work / "runs" / "v1")
    unchanged = shutil.copytree(folder, work / "digits_v1")  # the previous version as it was: the floor run
    _digits_folder(folder, len(data))
    rows = []
    for r in range(repeats):
        full = _audit([*base, "--resume-dir", str(work / f"full{r}")], work / "runs" / f"full{r}")
        incremental = _audit([*base, "--since", str(work / "v1"), "--resume-dir", str(work / f"incremental{r}")],
                             work / "runs" / f"incremental{r}")
        assert full["scores"]["sample_id"].tolist() == incremental["scores"]["sample_id"].tolist()
        m = incremental["metrics"]
        rows.append({"full_exit": full["exit"], "incremental_exit": incremental["exit"],
                     "full_seconds": full["seconds"], "incremental_seconds": incremental["seconds"],
                     "full_cpu_seconds": full["cpu_seconds"], "incremental_cpu_seconds": incremental["cpu_seconds"],
                     "full_steps": full["steps"], "incremental_steps": incremental["steps"],
                     "full_score_seconds": full["metrics"]["seconds.score"],
                     "incremental_score_seconds": m["seconds.score"],
                     "spearman_with_full": spearman(incremental["scores"]["influence"].to_numpy(),
                                                    full["scores"]["influence"].to_numpy()),
                     "findings": findings_agreement(full["scores"], incremental["scores"],
                                                    set(full["scores"]["sample_id"]) - set(previous["scores"]["sample_id"])),
                     **{key: m[key] for key in m if key.startswith("incremental.")}})
        print(json.dumps(rows[-1]), flush=True)
    # the floor: an incremental audit of the previous version itself (no new sample): what every step costs
    # however few samples are new (ZenML step launch and artifacts, MLflow, the gate, the 200-score re-check)
    floor = _audit([*base, "--set", f"dataset.source={unchanged}", "--since", str(work / "v1")], work / "runs" / "floor")
    ratios = {name: [row[f"incremental_{name}"] / row[f"full_{name}"] for row in rows]
              for name in ("seconds", "cpu_seconds", "score_seconds")}
    full_median = statistics.median(row["full_seconds"] for row in rows)
    return {"setting": "digits_simclr_s0 via influencegate audit", "previous": len(previous["scores"]),
            "floor": {"seconds": floor["seconds"], "cpu_seconds": floor["cpu_seconds"], "steps": floor["steps"],
                      "outside_steps_seconds": floor["seconds"] - sum(floor["steps"].values()),
                      "share_of_full_median": floor["seconds"] / full_median},
            "version": len(data), "previous_audit_seconds": previous["seconds"], "runs": rows,
            **{f"{label}_ratio_median": statistics.median(ratios[name]) for label, name in
               (("time", "seconds"), ("cpu", "cpu_seconds"), ("score_step", "score_seconds"))},
            **{f"{label}_ratio_range": [min(ratios[name]), max(ratios[name])] for label, name in
               (("time", "seconds"), ("cpu", "cpu_seconds"), ("score_step", "score_seconds"))},
            "spearman_with_full_range": [min(r["spearman_with_full"] for r in rows),
                                         max(r["spearman_with_full"] for r in rows)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settings", default="digits_simclr_s0,sklearn_patches_byol_s5")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--encoder-cache", default="/tmp/influencegate_encoders")
    p.add_argument("--out", default=None, help="default: incremental_audit.json, with --pipeline "
                                                "incremental_audit_pipeline.json")
    p.add_argument("--pipeline", action="store_true", help="time `influencegate audit` (module docstring)")
    p.add_argument("--work", default="/tmp/incremental_pipeline", help="--pipeline: folders, stores and runs")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    if args.pipeline:
        result = pipeline_setting(args.repeats, args.epochs, Path(args.encoder_cache), Path(args.work))
        (RESULTS / (args.out or "incremental_audit_pipeline.json")).write_text(json.dumps(result, indent=1) + "\n")
        return
    rows = []
    for setting in args.settings.split(","):  # written after every setting, so a stopped run keeps what finished
        rows.append(one_setting(setting, args.repeats, args.epochs, Path(args.encoder_cache)))
        print(json.dumps(rows[-1]), flush=True)
        (RESULTS / (args.out or "incremental_audit.json")).write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
