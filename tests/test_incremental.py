"""Incremental audits of an appended version (influence.incremental) against a full audit of it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from influencegate import InfluenceConfig, InfluenceScorer
from influencegate.influence.fit_state import fit_state, restore_fit
from influencegate.influence.incremental import score_appended
from influencegate.models import SmallCNN

CONFIG = InfluenceConfig(draws=4, fit_draws=2, rank=8, batch_size=128, progress=False, target_stability=None)


def restored(encoder, state) -> InfluenceScorer:
    scorer = InfluenceScorer(encoder, CONFIG)
    restore_fit(scorer, state)
    return scorer


@pytest.fixture(scope="module")
def versions(digits):
    """(encoder, previous version = first 540 digits, its fit state and table, appended version = 600 digits,
    the full audit of the appended version)."""
    torch.manual_seed(0)
    encoder = SmallCNN(in_channels=1)
    previous = digits.subset(digits.sample_ids[:540])
    appended = digits.subset(digits.sample_ids[:600])
    before = InfluenceScorer(encoder, CONFIG).fit(previous)
    full = InfluenceScorer(encoder, CONFIG).fit(appended).score(appended)
    return encoder, fit_state(before), before.score(previous), appended, full


def test_extended_fit_equals_a_fit_of_the_union(versions, digits):
    encoder, state, _, appended, _ = versions
    extended = restored(encoder, state)
    extended.extend_fit(digits.subset(digits.sample_ids[540:600]))
    union = InfluenceScorer(encoder, CONFIG).fit(appended)
    for name, curv in union.curvature.items():
        assert extended.curvature[name].count == curv.count
        scale = curv.outer_sum.abs().max().item()  # float32 batches composed differently: relative to the largest entry
        torch.testing.assert_close(extended.curvature[name].outer_sum, curv.outer_sum, rtol=0, atol=1e-6 * scale)


def test_extending_a_fit_of_spread_samples_adds_the_same_share_of_the_new_ones(digits, monkeypatch):
    """Default rule (all K draws of a spread share of the samples): 540 digits fit 135 of them (share 1/4);
    extending by 60 adds 15 of those, spread over them: the curvature of exactly those 150 samples."""
    from dataclasses import replace

    from influencegate.influence import config as config_module
    from influencegate.influence.fit_samples import spread_indices

    torch.manual_seed(0)
    encoder = SmallCNN(in_channels=1)
    spread = replace(CONFIG, fit_draws=None)
    dimension = 64  # rank 8: every layer's r_out r_in is at most 8 x 8
    monkeypatch.setattr(config_module, "FIT_ROWS_PER_DIM", 135 * 4 / dimension)  # 135 samples x 4 draws
    before = InfluenceScorer(encoder, spread).fit(digits.subset(digits.sample_ids[:540]))
    assert before.fit_share == pytest.approx(135 / 540)
    extended = InfluenceScorer(encoder, spread)
    restore_fit(extended, fit_state(before))
    extended.extend_fit(digits.subset(digits.sample_ids[540:600]))
    fitted = [digits.sample_ids[i] for i in spread_indices(540, 135)]
    fitted += [digits.sample_ids[540 + i] for i in spread_indices(60, 15)]
    monkeypatch.setattr(config_module, "FIT_ROWS_PER_DIM", 10**6)  # the reference fits every sample it is given
    reference = InfluenceScorer(encoder, spread).fit(digits.subset(fitted))
    assert reference.fit_share == 1.0
    for name, curv in reference.curvature.items():
        assert extended.curvature[name].count == curv.count == 150 * 4
        scale = curv.outer_sum.abs().max().item()
        torch.testing.assert_close(extended.curvature[name].outer_sum, curv.outer_sum, rtol=0, atol=1e-6 * scale)


def test_appended_version_reuses_old_scores_within_tolerance(versions):
    encoder, state, table, appended, full = versions
    got, report = score_appended(restored(encoder, state), appended, table, tolerance=0.99, check_samples=50)
    assert got["sample_id"].tolist() == full["sample_id"].tolist()
    assert (report.previous, report.new, report.recheck_samples) == (540, 60, 50)
    assert report.kept_old_scores and report.recheck_spearman >= 0.99
    new = got["sample_id"].isin(appended.sample_ids[540:])
    np.testing.assert_allclose(got.loc[new, "influence"], full.loc[new, "influence"], rtol=1e-4)
    np.testing.assert_array_equal(got.loc[~new, "influence"],
                                  table.set_index("sample_id").loc[got.loc[~new, "sample_id"], "influence"])
    assert spearmanr(got["influence"], full["influence"]).statistic >= 0.99


def test_a_recheck_below_tolerance_scores_every_old_sample_again(versions):
    encoder, state, table, appended, full = versions
    got, report = score_appended(restored(encoder, state), appended, table, tolerance=1.0, check_samples=50)
    assert not report.kept_old_scores and report.rescored_old == 50 + 540
    np.testing.assert_allclose(got["influence"], full["influence"], rtol=1e-4)


def test_a_version_that_drops_samples_or_a_kfac_fit_is_refused(versions, digits):
    encoder, state, table, _, _ = versions
    fewer = digits.subset(digits.sample_ids[10:600])
    with pytest.raises(ValueError, match="only adds samples"):
        score_appended(restored(encoder, state), fewer, table)
    from dataclasses import replace

    kfac = InfluenceScorer(encoder, replace(CONFIG, curvature="kfac")).fit(digits.subset(digits.sample_ids[:64]))
    with pytest.raises(ValueError, match="cannot be extended"):
        kfac.extend_fit(digits.subset(digits.sample_ids[64:80]))


def test_cli_since_scores_only_the_appended_images(encoder_checkpoint, tmp_path, capsys):
    """`score --since DIR`: version 2 (120 + 12 images) reuses version 1's resume directory; another config or
    a directory that is no run is one line, exit 2."""
    import pandas as pd

    from conftest import write_digits_folder
    from influencegate.cli import main

    folder = write_digits_folder(tmp_path / "images", count=120)
    base = ["score", str(folder), "--encoder", str(encoder_checkpoint), "--draws", "4", "--rank", "8",
            "--target-stability", "none", "--no-findings", "--image-size", "8", "--channels", "1"]
    assert main([*base, "--resume-dir", str(tmp_path / "v1"), "--out", str(tmp_path / "v1.parquet")]) == 0
    write_digits_folder(folder, count=12, offset=120)
    capsys.readouterr()
    assert main([*base, "--since", str(tmp_path / "v1"), "--out", str(tmp_path / "v2.parquet")]) == 0
    assert "incremental: 12 new samples scored, 120 previous scores kept" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "full.parquet")]) == 0
    got, full = pd.read_parquet(tmp_path / "v2.parquet"), pd.read_parquet(tmp_path / "full.parquet")
    assert got["sample_id"].tolist() == full["sample_id"].tolist() and len(got) == 132
    assert spearmanr(got["influence"], full["influence"]).statistic >= 0.99
    capsys.readouterr()
    assert main([*base[:5], "3", *base[6:], "--since", str(tmp_path / "v1"), "--out", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert "another config" in err and err.count("\n") == 1
    assert main([*base, "--since", str(tmp_path / "images"), "--out", str(tmp_path / "y.parquet")]) == 2
    assert "holds no run.json" in capsys.readouterr().err


def test_cli_versions_chain_through_their_resume_directories(encoder_checkpoint, tmp_path, capsys):
    """v1 scored with --resume-dir; v2 --since v1 --resume-dir v2 keeps v2 as a finished run, which a plain
    --resume-dir rerun of v2 reuses whole and v3 --since v2 builds on."""
    import pandas as pd

    from conftest import write_digits_folder
    from influencegate.cli import main

    folder = write_digits_folder(tmp_path / "images", count=100)
    base = ["score", str(folder), "--encoder", str(encoder_checkpoint), "--draws", "4", "--rank", "8",
            "--target-stability", "none", "--no-findings", "--image-size", "8", "--channels", "1", "--shard-size", "40"]
    assert main([*base, "--resume-dir", str(tmp_path / "v1"), "--out", str(tmp_path / "v1.parquet")]) == 0
    write_digits_folder(folder, count=10, offset=100)
    assert main([*base, "--since", str(tmp_path / "v1"), "--resume-dir", str(tmp_path / "v2"),
                 "--out", str(tmp_path / "v2.parquet")]) == 0
    capsys.readouterr()
    assert main([*base, "--resume-dir", str(tmp_path / "v2"), "--out", str(tmp_path / "v2again.parquet")]) == 0
    assert "3 of 3 shards reused, fit reused" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "v2.parquet"), pd.read_parquet(tmp_path / "v2again.parquet"))
    write_digits_folder(folder, count=10, offset=110)
    assert main([*base, "--since", str(tmp_path / "v2"), "--out", str(tmp_path / "v3.parquet")]) == 0
    assert "incremental: 10 new samples scored, 110 previous scores kept" in capsys.readouterr().out
