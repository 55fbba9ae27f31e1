"""The pair audit: `influencegate score-pairs` (core), the pairs gate, and `influencegate audit-pairs` through ZenML
with a real MLflow store, the real MiniLM text encoder and real Great Expectations."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from influencegate.cli import main
from influencegate.ecif import PAIR_COLUMNS

PAIRS_SUITE = Path(__file__).resolve().parents[1] / "configs" / "expectations" / "pairs.json"


@pytest.fixture()
def pair_manifest(tmp_path: Path, digits_folder) -> Path:
    """64 digits as PNGs with templated captions, 12 of them shuffled (`is_misaligned`), plus one row whose
    image file is missing."""
    from sklearn.datasets import load_digits

    from influencegate.data.captions import caption_digits, shuffle_captions

    root = digits_folder(tmp_path / "pairs", count=64)
    labels = load_digits().target[:64]
    captions, _, shuffled = shuffle_captions(caption_digits(labels, 0), labels, 12 / 64, 1)
    rows = [{"path": f"img_{i:04d}.png", "caption": captions[i], "is_misaligned": bool(shuffled[i])}
            for i in range(64)]
    rows.append({"path": "img_missing.png", "caption": "a handwritten seven", "is_misaligned": False})
    manifest = root / "pairs.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def test_score_pairs_writes_the_pair_table_and_keeps_failed_rows(pair_manifest: Path, tmp_path: Path, capsys):
    out = tmp_path / "pairs.parquet"
    assert main(["score-pairs", str(pair_manifest), "--out", str(out), "--image-size", "8", "--channels", "1"]) == 0
    table = pd.read_parquet(out)
    assert list(table.columns) == PAIR_COLUMNS and len(table) == 65
    missing = table[table["sample_id"] == "img_missing.png"].iloc[0]
    assert missing["error"] == "missing file" and pd.isna(missing["misalignment_score"])
    scored = table[table["error"].isna()]
    assert len(scored) == 64 and scored["misalignment_score"].notna().all()
    assert sorted(scored["misalignment_rank"]) == list(range(1, 65))
    assert (scored["clip_score"].abs() <= 1 + 1e-6).all()
    assert "AUROC" in capsys.readouterr().out  # the manifest's is_misaligned labels are used


def test_reopening_pairs_detects_a_changed_manifest(pair_manifest: Path):
    from influencegate.data import DatasetError, load_pairs
    from influencegate.workflows.references import DatasetRef

    options = {"source": str(pair_manifest), "image_size": 8, "channels": 1}
    ref = DatasetRef.of(load_pairs(**options), "pairs", **options)
    assert ref.n_rows == 65 and ref.n_readable == 64 and ref.n_failed == 1
    assert ref.open(fresh=True).version == ref.version
    rows = pd.read_csv(pair_manifest)
    rows.loc[0, "caption"] = "a handwritten nine"
    rows.to_csv(pair_manifest, index=False)
    kept = ref.open()  # this process decoded the version already: it keeps that version's own rows
    assert kept.version == ref.version and kept.records.loc[0, "caption"] != "a handwritten nine"
    with pytest.raises(DatasetError, match="changed during the audit"):
        ref.open(fresh=True)  # what another process (a remote orchestrator's step) does


def test_a_version_is_decoded_once_per_process(tmp_path: Path, digits_folder, monkeypatch: pytest.MonkeyPatch):
    """`DatasetRef.open` hands back the dataset this process holds for the reference (no decode), reloads a
    reference it does not hold, and keeps only the newest OPENED_LIMIT versions."""
    from influencegate.data import load_images
    from influencegate.workflows import references

    options = {"image_size": 8, "channels": 1}
    folders = [digits_folder(tmp_path / f"v{i}", count=4 + i) for i in range(references.OPENED_LIMIT + 1)]
    refs = [references.DatasetRef.of(load_images(str(f), **options), "images", **options) for f in folders]
    loads: list[str] = []
    monkeypatch.setattr(references, "load_images", lambda **kw: loads.append(kw["source"]) or load_images(**kw))
    assert [len(r.open()) for r in refs[1:]] == [4 + i for i in range(1, len(refs))] and loads == []
    assert refs[1].open() is refs[1].open() and loads == []
    assert len(refs[0].open()) == 4 and loads == [str(folders[0])]  # evicted by the ones after it: decoded again
    assert refs[-1].open(fresh=True) is not refs[-1].open(fresh=True) and len(loads) == 3


def test_pair_inputs_without_captions_are_usage_errors(tmp_path: Path, digits_folder, capsys):
    folder = digits_folder(tmp_path / "imgs", count=8)
    assert main(["score-pairs", str(folder)]) == 2
    assert "no 'caption' column" in capsys.readouterr().err
    assert main(["audit-pairs", "--set", "parameters.pairs.source=/no/such.csv"]) == 2
    assert "pairs source not found" in capsys.readouterr().err
    assert main(["audit-pairs", "--set", "ecif.bogus=1"]) == 2
    assert "parameters.ecif" in capsys.readouterr().err
    assert main(["align", "--set", "ecif.bogus=1"]) == 2  # the former name of audit-pairs still works
    assert "parameters.ecif" in capsys.readouterr().err


def test_pairs_gate_rejects_too_many_misaligned_pairs():
    from influencegate.integrations.great_expectations import run_gate

    table = pd.DataFrame({"sample_id": ["a", "b"], "misalignment_score": [1.0, 0.0], "error": [None, None]})
    base = {"n_scored": 100.0, "error_fraction": 0.0, "misaligned_fraction": 0.02, "flags_calibrated": 1.0}
    ok = run_gate(table, pd.DataFrame([base]), PAIRS_SUITE, dataset_name="p", dataset_version="v")
    assert ok["approved"] is True
    uncalibrated = run_gate(table, pd.DataFrame([{**base, "flags_calibrated": 0.0}]), PAIRS_SUITE, dataset_name="p",
                            dataset_version="v")
    assert uncalibrated["failed_expectations"] == ["summary.flags_calibrated.expect_column_values_to_be_between"]
    bad = run_gate(table, pd.DataFrame([{**base, "misaligned_fraction": 0.2}]), PAIRS_SUITE, dataset_name="p",
                   dataset_version="v")
    assert bad["failed_expectations"] == ["summary.misaligned_fraction.expect_column_values_to_be_between"]


def test_embedded_pairs_split_into_disjoint_audit_and_reference_parts(tmp_path: Path, digits_folder):
    from influencegate.data import load_pairs
    from influencegate.data import DatasetError

    audit = load_pairs("digits-captions", shuffled_fraction=0.2, part="audit")
    reference = load_pairs("digits-captions", shuffled_fraction=0.0, part="reference")
    assert (len(audit), len(reference)) == (1597, 200) and not set(audit.sample_ids) & set(reference.sample_ids)
    assert audit.records["is_misaligned"].sum() == round(0.2 * 1597) and not reference.records["is_misaligned"].any()
    assert load_pairs("digits-captions", shuffled_fraction=0.0, part="reference").sample_ids == reference.sample_ids
    with pytest.raises(DatasetError, match="part must be one of"):
        load_pairs("digits-captions", part="test")
    with pytest.raises(DatasetError, match="applies to 'digits-captions' only"):
        load_pairs(str(digits_folder(tmp_path / "imgs", count=4)), part="reference")


def test_pairs_config_pairs_the_embedded_reference_with_the_embedded_pairs_only(pair_manifest: Path):
    from influencegate.pipelines.config import ConfigError, load_config

    default = load_config("pairs")["parameters"]
    assert (default["pairs"]["part"], default["reference"]["part"]) == ("audit", "reference")
    with pytest.raises(ConfigError, match="embedded reference"):
        load_config("pairs", overrides=[f"parameters.pairs.source={pair_manifest}"])
    own = load_config("pairs", overrides=[f"parameters.pairs.source={pair_manifest}", "parameters.reference=null"])
    assert own["parameters"]["reference"] is None
    with pytest.raises(ConfigError, match="share digits"):
        load_config("pairs", overrides=["parameters.pairs.part=all"])
    with pytest.raises(ConfigError, match="part applies to digits-captions only"):
        load_config("pairs", overrides=[f"parameters.reference.source={pair_manifest}", "parameters.reference.part=audit"])


@pytest.mark.parametrize("shuffled, approved", [(0.2, False), (0.0, True)])
def test_pairs_gate_rejects_shuffled_captions_and_approves_clean_ones(shuffled, approved):
    """The embedded pairs scored for real (SmallCNN + MiniLM + ECIF against the 200 held-out digits), then the
    real pairs suite: the calibrated is_misaligned flags must separate 20% shuffled captions from clean ones."""
    from influencegate.data import load_pairs
    from influencegate.statistics import known_misalignment, summary_stats
    from influencegate.workflows.pair_audit import score_pair_dataset
    from influencegate.integrations.great_expectations import run_gate

    pairs = load_pairs("digits-captions", shuffled_fraction=shuffled, part="audit")
    reference = load_pairs("digits-captions", shuffled_fraction=0.0, part="reference")
    audit = score_pair_dataset(pairs, reference, {"progress": False})
    table, info = audit.table, audit.info
    summary = summary_stats(table, None, info["flag_rule"])
    assert len(table) == 1597 and summary["flags_calibrated"] == 1.0
    decision = run_gate(table, pd.DataFrame([summary]), PAIRS_SUITE, dataset_name="digits", dataset_version="v")
    assert decision["approved"] is approved, summary["misaligned_fraction"]
    if shuffled:
        truth = known_misalignment(pairs.records)
        assert truth[table.loc[table["is_misaligned"], "sample_id"]].mean() > 0.9  # precision of the flags


def test_score_pairs_cli_measures_the_embedded_pairs_against_the_embedded_reference(tmp_path: Path, capsys):
    out = tmp_path / "pairs.csv"
    assert main(["score-pairs", "digits-captions", "--reference", "digits-captions", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pairs digits-captions-audit-0.2-seed0" in printed and "reference digits-captions-reference" in printed
    assert len(pd.read_csv(out)) == 1597


@pytest.mark.slow
def test_pair_audit_pipeline_logs_everything_and_records_the_decision(pair_manifest: Path, tmp_path: Path, monkeypatch,
                                                                 mlflow_uri: str, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "pairs.yaml"
    config.write_text(yaml.safe_dump({"parameters": {
        "pairs": {"source": str(pair_manifest), "image_size": 8, "channels": 1, "name": "digit-pairs"},
        "ecif": {"pretrain_epochs": 5},
        "tracking": {"uri": mlflow_uri, "experiment": "influencegate-pairs-tests"}}}))
    code = main(["audit-pairs", str(config)])
    out = capsys.readouterr().out
    assert code in (0, 1) and ("APPROVED" if code == 0 else "REJECTED") in out
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("influencegate-pairs-tests")
    run = client.search_runs([experiment.experiment_id])[0]
    assert run.data.tags["dataset.name"] == "digit-pairs" and run.data.tags["audit.kind"] == "pairs"
    assert run.data.tags["gate.status"] == ("approved" if code == 0 else "rejected")
    assert {"misaligned_fraction", "misalignment_auroc", "clip_score_auroc", "n_scored"} <= set(run.data.metrics)
    assert run.data.metrics["n_scored"] == 64 and run.data.params["ecif.pretrain_epochs"] == "5"
    # own pairs, no reference named: self-influence, uncalibrated flags, and the gate fails closed
    assert run.data.params["ecif.flag_rule"] == "robust_z" and run.data.metrics["flags_calibrated"] == 0.0
    assert code == 1 and run.data.tags["gate.status"] == "rejected"
    files = {a.path for d in ("figures", "scores", "gate") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"figures/most_misaligned_pairs.png", "figures/misalignment_roc.png", "scores/scores.parquet",
            "gate/decision.json"} <= files
