"""dataset_audit_pipeline: load -> encoder -> score -> findings -> figures -> drift -> gate -> MLflow -> approval."""
from __future__ import annotations

from typing import Any, Optional

from zenml import pipeline

from influencegate.integrations.zenml.package_lookup import cache_package_map
from influencegate.integrations.zenml.store import open_store
from influencegate.pipelines.schema import ImageAuditParameters
from influencegate.steps import (compare_with_approved, embed_dataset, find_issues, load_dataset,
                                 load_or_pretrain_encoder, log_to_mlflow, record_approval, render_figures,
                                 render_findings, score_influence, validate_and_gate)

#: The embedded default (also what the packaged audit_digits.yaml spells out): the digits audited end to end.
DEFAULTS = ImageAuditParameters().model_dump()


@pipeline(enable_cache=False)
def dataset_audit_pipeline(dataset: Optional[dict] = None, encoder: Optional[dict] = None, scorer: Optional[dict] = None,
                           findings: Optional[dict] = None, suite: Optional[str] = None, gate: Optional[dict] = None,
                           tracking: Optional[dict] = None, influence: Optional[dict] = None) -> None:
    """Audit one dataset version end to end; every argument is a section of configs/audit_digits.yaml
    (None: the embedded default, the digits). Its gate decision is the artifact `influencegate_gate_decision`.
    influence: {resume_dir, since} (`schema.InfluenceSection`): with since, only the samples appended since that
    version are scored and encoded, and the findings check what they change against the whole version
    (`findings.appended`); resume_dir keeps this version's fit, scores, embeddings and findings state."""
    dataset = dataset or DEFAULTS["dataset"]
    encoder = encoder or DEFAULTS["encoder"]
    scorer = DEFAULTS["scorer"] if scorer is None else scorer
    findings = DEFAULTS["findings"] if findings is None else findings
    gate = gate or DEFAULTS["gate"]
    tracking = tracking or DEFAULTS["tracking"]
    ref, records = load_dataset(**dataset)
    model, encoder_info = load_or_pretrain_encoder(ref, **encoder)
    device = (scorer or {}).get("device", "cpu")
    influence = influence or {}
    scored, _, scoring_info = score_influence(ref, model, scorer, **influence)
    # after scoring: the scoring step claims the resume directory (run.json) before anything else is kept there
    embeddings = embed_dataset(ref, model, device=device, **influence, after="score_influence")
    scores, summary, _, _, texts = find_issues(ref, model, scored, findings, device=device, embeddings=embeddings,
                                               **influence)
    histogram, most, least = render_figures(ref, scores)
    finding_artifacts, embedding_map, findings_report = render_findings(ref, model, scores, summary, texts, findings,
                                                                        device=device, embeddings=embeddings,
                                                                        **influence)
    report, drift = compare_with_approved(ref, scores, threshold=gate.get("drift_threshold"))
    decision, _, docs = validate_and_gate(ref, scores, summary, scoring_info, drift, suite,
                                          drift_blocks=bool(gate.get("drift_blocks", False)), findings=findings,
                                          resume_dir=influence.get("resume_dir"))
    run = log_to_mlflow(ref, records, scores, summary, scoring_info, encoder_info, decision, docs, histogram, most,
                        least, report, drift, findings=finding_artifacts, embedding_map=embedding_map,
                        findings_report=findings_report, tracking=tracking)
    record_approval(decision, run)


def recorded_decision(run: Any) -> dict[str, Any]:
    """The gate decision a pipeline run recorded (artifact `influencegate_gate_decision`), read back so that
    what the caller sees is what was recorded; RuntimeError when the run recorded none."""
    from zenml.client import Client

    from influencegate.integrations.zenml.approvals import DECISION_ARTIFACT

    found = Client().list_artifact_versions(name=DECISION_ARTIFACT, pipeline_run=run.id, size=1).items
    if not found:
        raise RuntimeError(f"pipeline run {run.name} recorded no gate decision (status {run.status})")
    return found[0].load()


def run_audit(config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Run the pipeline for a normalised config (`load_config("images")`); returns (decision, pipeline run).
    The ZenML store is opened first under a lock (`open_store`: concurrent audits on a new store)."""
    open_store()
    cache_package_map()  # ZenML asks for the installed-package map on every artifact
    options = {k: v for k, v in config.items() if k != "parameters"}
    run = dataset_audit_pipeline.with_options(**options)(**config["parameters"])
    return recorded_decision(run), run
