"""Steps of the pair audit (image-text pairs, scored with ECIF): load them, score them, picture them, log them."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Tuple

import pandas as pd
from PIL import Image
from zenml import ArtifactConfig, step

from influencegate.data import DIGITS_CAPTIONS, load_pairs
from influencegate.data.errors import require_readable
from influencegate.ecif import EcifConfig
from influencegate.ecif.trace import KINDS
from influencegate.integrations.mlflow import AuditRun, Tracking, log_audit
from influencegate.integrations.zenml.run_times import pipeline_started_at
from influencegate.report.figures import dataset_images
from influencegate.report.pair_summary import effect_metrics
from influencegate.report.pairs import misaligned_gallery, roc_figure
from influencegate.report.review import review_table
from influencegate.report.traceback import trace_gallery
from influencegate.statistics import known_misalignment, summary_stats
from influencegate.workflows.pair_audit import score_pair_dataset
from influencegate.workflows.references import DatasetRef

PAIR_SCORES_ARTIFACT = "influencegate_pair_scores"


@step(enable_cache=False)
def load_pair_dataset(source: str = DIGITS_CAPTIONS, image_size: Optional[int] = None,
                       channels: Optional[int] = None, name: Optional[str] = None, shuffled_fraction: float = 0.2,
                       seed: int = 0, part: str = "all", workers: int = 0) -> Tuple[
        Annotated[DatasetRef, "pairs"], Annotated[pd.DataFrame, "pair_records"]]:
    """Load image-text pairs (`influencegate.data.load_pairs`): a manifest with path and caption columns, or
    "digits-captions" (or its "audit" / "reference" part). Returns the reference later steps take and every row
    (failed ones included); DatasetError when no pair is readable."""
    options = dict(source=source, image_size=image_size, channels=channels, name=name,
                   shuffled_fraction=shuffled_fraction, seed=seed, part=part, workers=workers)
    dataset = load_pairs(**options)
    require_readable(dataset)
    return DatasetRef.of(dataset, "pairs", **options), dataset.records


@step
def score_pairs(pairs: DatasetRef, reference: Optional[DatasetRef] = None,
                ecif: Optional[dict[str, Any]] = None, effects: Optional[dict[str, Any]] = None) -> Tuple[
        Annotated[pd.DataFrame, ArtifactConfig(name=PAIR_SCORES_ARTIFACT)],
        Annotated[dict, "pair_summary"],
        Annotated[dict, "ecif_info"],
        Annotated[pd.DataFrame, "removal_effects"],
        Annotated[pd.DataFrame, "removed_pairs"],
        Annotated[pd.DataFrame, "trace_back"]]:
    """ECIF scores of every pair (the pair scores table of docs/design.md section 2), against the clean `reference`
    pairs when given (else self-influence); `ecif`: EcifConfig fields. The summary holds misalignment_auroc and
    clip_score_auroc when the pairs carry known corruption labels. `effects`: EffectsConfig fields (None: off):
    with a reference, the removal effects, their removed pairs and the trace-back (`workflows.pair_audit`)."""
    config = EcifConfig.from_dict({"progress": False, **(ecif or {})})
    dataset = pairs.open()
    audit = score_pair_dataset(dataset, reference.open() if reference else None, config, effects=effects)
    info = {"config": {**config.to_params(), **audit.info["flag_rule"], "effects": audit.info["effects"]},
            "seconds": {k: round(v, 3) for k, v in audit.info["seconds"].items()},
            "reference": reference.name if reference else None}
    summary = summary_stats(audit.table, known_misalignment(dataset.records), audit.info["flag_rule"])
    return audit.table, summary, info, audit.removal_effects, audit.removed_pairs, audit.trace


@step
def render_pair_figures(pairs: DatasetRef, scores: pd.DataFrame, trace: pd.DataFrame,
                        reference: Optional[DatasetRef] = None, k: int = 16) -> Tuple[
        Annotated[Image.Image, "most_misaligned_pairs"], Annotated[Image.Image, "misalignment_roc"],
        Annotated[Image.Image, "traceback_plain"], Annotated[Image.Image, "traceback_relative"]]:
    """The k most misaligned pairs with their captions, the ROC against known corruption labels, and the
    trace-back galleries (plain and relative influence) of the worst mispredicted reference queries."""
    dataset = pairs.open()
    pair_images = dataset_images(dataset)
    query_images = dataset_images(reference.open()) if reference else {}
    plain, relative = (trace_gallery(trace, kind, query_images, pair_images) for kind in KINDS)
    return (misaligned_gallery(scores, dataset, k=k), roc_figure(scores, known_misalignment(dataset.records)),
            plain, relative)


@step(enable_cache=False)
def log_pairs_to_mlflow(pairs: DatasetRef, records: pd.DataFrame, scores: pd.DataFrame, summary: dict,
                        ecif_info: dict, decision: dict, data_docs: Path, gallery: Image.Image, roc: Image.Image,
                        trace_plain: Image.Image, trace_relative: Image.Image, removal_effects: pd.DataFrame,
                        removed_pairs: pd.DataFrame, trace: pd.DataFrame,
                        tracking: Optional[dict] = None) -> Annotated[dict, "mlflow_run"]:
    """One MLflow run of the pair audit: the pair scores table, the summary (with the removal effects as
    `effects.*` metrics), the ECIF config, the gallery, the ROC, the trace-back galleries, the removal effects,
    their removed pairs and the trace-back as CSV and MLflow tables, the gate decision and the review table of
    flagged pairs (see `influencegate.integrations.mlflow.log_audit`), written to the tracking section's
    `run_dir` first and uploaded as `log_to_mlflow` does."""
    timings = {f"seconds.{k}": v for k, v in (ecif_info.get("seconds") or {}).items()}
    figures = {"misaligned_gallery": gallery, "roc": roc, "traceback_plain": trace_plain,
               "traceback_relative": trace_relative}
    tables = {"removal_effects": removal_effects, "removed_pairs": removed_pairs, "trace_back": trace}
    run = AuditRun(scores=scores, summary={**summary, **timings, **effect_metrics(removal_effects)},
                   decision={**decision, "data_docs": str(data_docs)}, dataset=pairs.logged(), records=records,
                   scorer_params=ecif_info.get("config", {}), scorer_prefix="ecif", figures=figures, tables=tables,
                   review=review_table(scores, dataset_images(pairs.open())), extra_tags={"audit.kind": "pairs"},
                   started_at=pipeline_started_at())
    return log_audit(run, Tracking.of(tracking))
