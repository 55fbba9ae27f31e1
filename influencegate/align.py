"""Core-level helpers of the pair-alignment audit (ECIF): load image-text pairs, score them, summarise.

Pure core (torch, numpy, pandas): the CLI's `score-pairs` command and the ZenML steps of
`pair_alignment_pipeline` both call these, so the numbers in a parquet file, in MLflow and in the gate are
computed once, the same way.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

#: The embedded default pairs: scikit-learn's digits with templated captions, a share of them shuffled.
DIGITS_CAPTIONS = "digits-captions"


def load_pairs(source: str = DIGITS_CAPTIONS, image_size: int | None = None, channels: int | None = None,
               name: str | None = None, shuffled_fraction: float = 0.2, seed: int = 0, part: str = "all",
               workers: int = 0) -> Any:
    """An ImageDataset of image-text pairs: a manifest with `path` and `caption` columns, WebDataset shards
    (image + .txt caption) or Parquet files with image bytes and a `caption` column, or "digits-captions"
    (the embedded default: templated captions, `shuffled_fraction` of them shuffled with `seed`, the truth in
    the records' `is_misaligned` column; `part` "audit" or "reference" selects one of its two disjoint parts,
    see `influencegate.data.captions.captioned_digits`). Raises DatasetError for a source without a caption
    column or a bad option."""
    from influencegate.data import DatasetError, load_images
    from influencegate.data.captions import PARTS, captioned_digits

    if source == DIGITS_CAPTIONS:
        if not 0.0 <= float(shuffled_fraction) < 1.0:
            raise DatasetError(f"shuffled_fraction must be in [0, 1), got {shuffled_fraction}")
        if part not in PARTS:
            raise DatasetError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        dataset = captioned_digits(float(shuffled_fraction), int(seed), image_size, channels, part)
        if name:
            dataset.name = name
        return dataset
    dataset = load_images(source, image_size=image_size, channels=channels, name=name, workers=workers)
    if part != "all":
        raise DatasetError(f"part={part!r} applies to {DIGITS_CAPTIONS!r} only; split a manifest into two files")
    if "caption" not in dataset.records.columns:
        raise DatasetError(f"{source!r} has no 'caption' column: image-text pairs need a manifest with path and "
                           "caption columns")
    # a number in a caption column is a caption too ("42"); one text type keeps the column writable to Parquet
    dataset.records["caption"] = [c if isinstance(c, str) or pd.isna(c) else str(c) for c in dataset.records["caption"]]
    return dataset


def pair_ref(dataset: Any, **load_options: Any) -> dict[str, Any]:
    """A small, serialisable reference to loaded pairs (what ZenML steps pass around): the options that
    reload them (`load_pairs`) and `audit.version_ref`'s name, version and counts."""
    from influencegate.audit import version_ref

    return {**load_options, **version_ref(dataset)}


def open_pairs(ref: dict[str, Any]) -> Any:
    """Reload the pairs `ref` points to; DatasetError when they changed since (another version id)."""
    from influencegate.audit import same_version

    options = {k: ref.get(k) for k in ("source", "image_size", "channels", "name", "shuffled_fraction", "seed", "part",
                                       "workers")
               if ref.get(k) is not None}
    return same_version(load_pairs(**options), ref, f"pairs {ref.get('name')!r}")


def score_pair_dataset(dataset: Any, reference: Any | None = None, config: Any = None,
                       image_encoder: Any | None = None, text_encoder: Any | None = None
                       ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(pair scores table, info) of ECIF on `dataset`'s pairs, against the clean pairs of `reference` when
    given (else self-influence). config: an EcifConfig, a mapping of its fields, or None. image_encoder: a
    frozen nn.Module, images M x C x H x W -> M x D (None: a SmallCNN pretrained on the pairs' images);
    text_encoder: captions -> N x D' float tensor (None: MiniLM); e.g. both towers of
    `models.load_image_text_encoders("open_clip:...")`. info: "seconds" (per phase and "total") and
    "flag_rule" (how is_misaligned was decided: `EcifScorer.flag_rule`)."""
    from influencegate.ecif import EcifConfig, EcifScorer, PairSet

    if not isinstance(config, EcifConfig):
        config = EcifConfig.from_dict(dict(config or {}))
    start = time.perf_counter()
    scorer = EcifScorer(config, image_encoder=image_encoder, text_encoder=text_encoder).fit(PairSet.from_dataset(dataset))
    table = scorer.score(PairSet.from_dataset(reference) if reference is not None else None)
    return table, {"seconds": {**scorer.timings, "total": time.perf_counter() - start}, "flag_rule": scorer.flag_rule}


def labelled_scores(table: pd.DataFrame, truth: pd.Series, column: str = "misalignment_score"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(labels bool, scores float) of the scored pairs that have a known corruption label (`truth`: a bool
    Series by sample_id); scores are oriented so that higher = more misaligned (clip_score is negated)."""
    scored = table[table[column].notna()]
    labels = scored["sample_id"].map(truth)
    keep = labels.notna().to_numpy()
    values = scored[column].to_numpy(dtype=float)[keep]
    return labels[keep].astype(bool).to_numpy(), -values if column == "clip_score" else values


def misalignment_auroc(table: pd.DataFrame, truth: pd.Series, column: str = "misalignment_score") -> float:
    """AUROC of `column` (misalignment_score, or clip_score with low = misaligned) against known corruption
    labels `truth` over the scored pairs that have one; NaN when one class is missing."""
    from sklearn.metrics import roc_auc_score

    labels, values = labelled_scores(table, truth, column)
    return float(roc_auc_score(labels, values)) if len(np.unique(labels)) == 2 else math.nan


def pair_summary_stats(table: pd.DataFrame, truth: pd.Series | None = None,
                       flag_rule: dict[str, Any] | None = None) -> dict[str, float]:
    """Flat metrics of a pair scores table: n_rows, n_scored, n_errors, error_fraction, n_misaligned,
    misaligned_fraction (of the scored pairs), misalignment_score_q50/q99, clip_score_mean, and
    flags_calibrated: 1 when is_misaligned was calibrated on a clean reference set (`flag_rule`, from
    `score_pair_dataset`), 0 when it was not (robust z-rule), NaN when unknown. With known corruption labels
    `truth` (bool Series by sample_id) also misalignment_auroc and clip_score_auroc (the baseline: low CLIP
    score = misaligned). A value that cannot be computed is NaN (the gate fails closed)."""
    from influencegate.ecif.scorer import REFERENCE_FLAG_RULE

    n_rows = len(table)
    has_error = table["error"].notna()
    score = pd.to_numeric(table["misalignment_score"], errors="coerce")
    scored = score.notna() & ~has_error
    n_scored = float(scored.sum())
    flagged = table["is_misaligned"].fillna(False).astype(bool) & scored
    stats = {
        "n_rows": float(n_rows), "n_scored": n_scored, "n_errors": float(has_error.sum()),
        "error_fraction": float(has_error.mean()) if n_rows else math.nan,
        "n_misaligned": float(flagged.sum()),
        "misaligned_fraction": float(flagged.sum()) / n_scored if n_scored else math.nan,
        "misalignment_score_q50": float(score[scored].quantile(0.5)) if n_scored else math.nan,
        "misalignment_score_q99": float(score[scored].quantile(0.99)) if n_scored else math.nan,
        "clip_score_mean": float(pd.to_numeric(table["clip_score"], errors="coerce")[scored].mean()) if n_scored else math.nan,
        "flags_calibrated": float(flag_rule.get("flag_rule") == REFERENCE_FLAG_RULE) if flag_rule else math.nan,
    }
    if truth is not None:
        stats["misalignment_auroc"] = misalignment_auroc(table, truth)
        stats["clip_score_auroc"] = misalignment_auroc(table, truth, "clip_score")
    return stats


def known_misalignment(dataset: Any) -> pd.Series | None:
    """The records' `is_misaligned` labels (bool, by sample_id) when the data carries them, else None."""
    records = dataset.records
    if "is_misaligned" not in records.columns:
        return None
    labels = records.dropna(subset=["is_misaligned"]).drop_duplicates("sample_id")
    return pd.Series(labels["is_misaligned"].astype(bool).to_numpy(), index=labels["sample_id"].astype(str))
