"""Incremental audits in dataset_audit_pipeline (parameters.influence.since, `audit --since`): the real local
ZenML stack and a real MLflow store, against a full scoring of the same version."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

#: Raw curvature (K-FAC fits cannot be extended) with the fit draws fixed, so that the extended fit is the
#: fit of the union and the new samples' scores equal a full audit's.
SCORER = {"rank": 8, "draws": 4, "fit_draws": 2, "curvature": "raw", "target_stability": None, "batch_size": 256,
          "progress": False}


def _one_line_error(capsys, argv: list[str], expected: str) -> None:
    """`influencegate argv` exits 2 and its last line is the one-line error (a failed step's progress bars and
    ZenML's step log come before it)."""
    from influencegate.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("influencegate: error: ") and expected in last, last


def test_incremental_config_errors_are_one_line_before_any_run(tmp_path: Path, digits_folder, audit_config,
                                                                capsys) -> None:
    """A missing previous directory, since = resume_dir, and since with a pretrained encoder: exit 2, one line."""
    folder = digits_folder(tmp_path / "images", count=20)
    config = str(audit_config(folder, scorer=SCORER))
    (tmp_path / "v1").mkdir()
    _one_line_error(capsys, ["audit", config, "--since", str(tmp_path / "nowhere")],
                    "previous version's resume directory not found")
    _one_line_error(capsys, ["audit", config, "--since", str(tmp_path / "v1"), "--resume-dir", str(tmp_path / "v1")],
                    "resume_dir must differ from since")
    _one_line_error(capsys, ["audit", config, "--since", str(tmp_path / "v1"), "--set", "encoder.checkpoint=null"],
                    "needs parameters.encoder.checkpoint")


@pytest.mark.slow
def test_incremental_audit_scores_only_appended_samples_and_equals_a_full_audit(
        tmp_path: Path, monkeypatch, digits_folder, audit_config, encoder_checkpoint, mlflow_uri, capsys) -> None:
    """v1 (300 digits) audited with a resume directory; v2 appends 30 digits and a near-copy of an old one.
    Refused in one line, leaving v1's directory usable: another scorer config, a version that drops a sample.
    The incremental audit of v2 keeps v1's scores, scores the 31 new samples as a full scoring does, ranks
    like it (Spearman >= 0.99, the re-check's tolerance), finds the near-copy of the old sample, and its
    MLflow run says it was incremental."""
    from mlflow.tracking import MlflowClient

    from influencegate import InfluenceConfig
    from influencegate.cli import main
    from influencegate.data import load_images
    from influencegate.integrations.zenml import last_approved
    from influencegate.models import load_encoder
    from influencegate.workflows.image_audit import score_dataset

    monkeypatch.chdir(tmp_path)
    folder = digits_folder(tmp_path / "growing", count=300)
    config = str(audit_config(folder, scorer=SCORER))
    v1, v2 = str(tmp_path / "v1"), str(tmp_path / "v2")
    assert main(["audit", config, "--resume-dir", v1]) == 0
    first = last_approved("growing")["scores"].set_index("sample_id")["influence"]

    digits_folder(folder, count=30, offset=300)
    copy = np.asarray(Image.open(folder / "img_0003.png")).copy()
    copy[0, 0] = min(255, int(copy[0, 0]) + 8)  # a near-copy of an old image, arriving with the new version
    Image.fromarray(copy, mode="L").save(folder / "img_0330.png")
    _one_line_error(capsys, ["audit", config, "--since", v1, "--set", "scorer.rank=4"], "another config")
    kept = (folder / "img_0005.png").read_bytes()
    (folder / "img_0005.png").unlink()
    _one_line_error(capsys, ["audit", config, "--since", v1], "only adds samples")
    (folder / "img_0005.png").write_bytes(kept)

    capsys.readouterr()
    assert main(["audit", config, "--since", v1, "--resume-dir", v2]) == 0
    assert "  incremental: 31 new samples scored, 300 previous scores kept (re-check of 200" in capsys.readouterr().out
    second = last_approved("growing")
    got = second["scores"]
    data = load_images(str(folder), image_size=8, channels=1)
    full, _, _ = score_dataset(data, load_encoder(str(encoder_checkpoint)), InfluenceConfig.from_dict(SCORER))
    assert got["sample_id"].tolist() == full["sample_id"].tolist() and len(got) == 331
    old = got["sample_id"].isin(first.index)
    assert int(old.sum()) == 300
    np.testing.assert_array_equal(got.loc[old, "influence"], first.loc[got.loc[old, "sample_id"]].to_numpy())
    np.testing.assert_allclose(got.loc[~old, "influence"], full.loc[~old, "influence"], rtol=1e-4)
    assert spearmanr(got["influence"], full["influence"]).statistic >= 0.99
    near = got[got["sample_id"].str.endswith("img_0330.png")].iloc[0]
    assert bool(near["is_duplicate"]) and str(near["duplicate_of"]).endswith("img_0003.png")

    client = MlflowClient(mlflow_uri)
    full_run, run = client.search_runs([client.get_experiment_by_name("influencegate-tests").experiment_id],
                                       filter_string="tags.`dataset.name` = 'growing'",
                                       order_by=["attributes.start_time ASC"])
    assert full_run.data.tags["audit.incremental"] == "false" and "incremental.new" not in full_run.data.metrics
    assert run.data.tags["audit.incremental"] == "true" and run.data.tags["incremental.old_scores"] == "kept"
    assert run.data.params["incremental.since"] == v1 and run.data.params["incremental.tolerance"] == "0.99"
    metrics = run.data.metrics
    assert (metrics["incremental.new"], metrics["incremental.previous"]) == (31, 300)
    assert metrics["incremental.rescored_old"] == metrics["incremental.recheck_samples"] == 200
    assert metrics["incremental.recheck_spearman"] >= 0.99
    assert metrics["n_rows"] == 331 and metrics["duplicate_fraction"] > 0
    assert (Path(v2) / "run.json").is_file()  # v2 is kept as the next version's base
