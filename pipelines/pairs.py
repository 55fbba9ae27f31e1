"""pair_audit_pipeline: load pairs -> ECIF scores -> figures -> gate -> MLflow -> approval. Its parameters are
the pair audit's config (`influencegate.pipelines.config.PairAuditParameters`; the packaged pairs_digits.yaml):
pairs, reference, ecif, suite, tracking."""
from __future__ import annotations

from typing import Any, Optional

from zenml import pipeline

from influencegate import resources
from influencegate.integrations.zenml.package_lookup import cache_package_map
from influencegate.integrations.zenml.store import open_store
from influencegate.pipelines.audit import recorded_decision
from influencegate.pipelines.schema import PairAuditParameters
from influencegate.steps import (load_pair_dataset, log_pairs_to_mlflow, record_approval, render_pair_figures,
                                 score_pairs, validate_and_gate)

#: The embedded default: 1,597 digits with templated captions, 20% of them shuffled, measured against the
#: 200 other digits with clean captions (the reference).
DEFAULTS = PairAuditParameters().model_dump()


@pipeline(enable_cache=False)
def pair_audit_pipeline(pairs: Optional[dict] = None, reference: Optional[dict] = None,
                        ecif: Optional[dict] = None, suite: Optional[str] = None,
                        tracking: Optional[dict] = None, effects: Optional[dict] = None) -> None:
    """Audit one version of image-text pairs with ECIF; every argument is a section of pairs_digits.yaml
    (None: the embedded default, except `effects`; `suite` None: the packaged pairs suite). `reference`: clean pairs (same keys
    as `pairs`) whose loss the misalignment score is measured on; None = self-influence (with `pairs` None
    too: the embedded reference). `effects`: EffectsConfig fields of the removal effects and the trace-back
    ({}: the defaults; None: off; they need a reference)."""
    if pairs is None:
        pairs, reference = DEFAULTS["pairs"], reference or DEFAULTS["reference"]
    tracking = tracking or DEFAULTS["tracking"]
    ref, records = load_pair_dataset(**pairs)
    clean = load_pair_dataset(**reference, id="load_reference_pairs")[0] if reference else None
    scores, summary, info, effects_table, removed, trace = score_pairs(ref, clean, ecif or {}, effects)
    gallery, roc, trace_plain, trace_relative = render_pair_figures(ref, scores, trace, clean)
    decision, _, docs = validate_and_gate(ref, scores, summary, info, None,
                                          suite or str(resources.path(resources.PAIRS_SUITE)))
    run = log_pairs_to_mlflow(ref, records, scores, summary, info, decision, docs, gallery, roc, trace_plain,
                              trace_relative, effects_table, removed, trace, tracking=tracking)
    record_approval(decision, run)


def run_pair_audit(config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Run the pipeline for a config from `load_config("pairs")`; returns (recorded decision, pipeline run).
    The ZenML store is opened first under a lock (`open_store`)."""
    open_store()
    cache_package_map()  # ZenML asks for the installed-package map on every artifact
    options = {k: v for k, v in config.items() if k != "parameters"}
    run = pair_audit_pipeline.with_options(**options)(**config["parameters"])
    return recorded_decision(run), run
