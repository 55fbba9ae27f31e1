"""The `influencegate` command: usage errors are one line with exit 2; `score` stays free of MLOps imports."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from influencegate.cli import main

MLOPS = ("zenml", "mlflow", "great_expectations", "evidently")


@pytest.mark.parametrize("argv, message", [
    (["audit", "does_not_exist.yaml"], "config file not found"),
    (["audit", "{config}", "--set", "scorer.rank"], "--set expects key=value"),
    (["audit", "{config}", "--set", "scorer.bogus=1"], "unknown scorer option"),
    (["audit", "{config}", "--set", "dataset.source=/no/such/folder"], "dataset source not found"),
    (["audit", "{config}", "--set", "encoder.checkpoint=/no/such.pt"], "encoder checkpoint not found"),
    (["audit", "{config}", "--set", "suite=/no/suite.json"], "expectation suite not found"),
    (["audit", "{config}", "--set", "nonsense.key=1"], "unknown parameter"),
    (["audit", "{config}", "--set", "dataset.channels=2"], "parameters.dataset.channels"),
    (["audit", "{config}", "--set", "dataset.bogus=1"], "unknown key 'parameters.dataset.bogus'"),
    (["audit", "{config}", "--set", "encoder.method=magic"], "parameters.encoder.method"),
    (["audit-pairs", "--set", "tracking.retry_seconds=0"], "parameters.tracking.retry_seconds"),
    (["score", "digits", "--pretrain", "magic"], "invalid choice"),
    (["score", "/no/such/folder"], "dataset source not found"),
    (["score", "digits", "--curvature", "magic"], "invalid choice"),
    (["score", "digits", "--groups", "race"], "--groups names column(s) ['race']"),
    (["frobnicate"], "invalid choice"),
    (["score", "digits", "--out", "scores.txt"], "the extension names the format"),
    (["score", "digits", "--out", "{tmp}"], "is a folder"),
    (["score-pairs", "--out", "pairs.json"], "the extension names the format"),
    (["score", "digits", "--workers", "-1"], "must be >= 0"),
    (["score", "gs://bucket/images"], "pip install 'influencegate[gcs]'"),
])
def test_usage_errors_exit_2_with_one_line(argv, message, tmp_path: Path, capsys) -> None:
    config = Path(__file__).resolve().parents[1] / "configs" / "audit_digits.yaml"
    (tmp_path / "folder.parquet").mkdir()
    argv = [a.replace("{config}", str(config)).replace("{tmp}", str(tmp_path / "folder.parquet")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_score_writes_table_without_mlops_imports(tmp_path: Path, encoder_checkpoint: Path, digits_folder) -> None:
    folder = digits_folder(tmp_path / "imgs", count=40, corrupt=2)
    out = tmp_path / "scores.parquet"
    code = (
        "import sys; from influencegate.cli import main\n"
        f"rc = main(['score', {str(folder)!r}, '--out', {str(out)!r}, '--encoder', {str(encoder_checkpoint)!r},"
        " '--image-size', '8', '--channels', '1', '--rank', '4', '--draws', '2', '--curvature', 'kfac'])\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {MLOPS!r})\n"
        "print('MLOPS', bad); sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MLOPS []" in result.stdout
    table = pd.read_parquet(out)
    assert len(table) == 40 and table["error"].notna().sum() == 2
    assert list(table.columns[:12]) == ["sample_id", "path", "influence", "log_influence", "influence_rank",
                                       "influence_percentile", "is_high_influence", "is_outlier", "outlier_score",
                                       "duplicate_group", "is_duplicate", "duplicate_of"]
    assert table.loc[table["error"].notna(), "is_duplicate"].eq(False).all()  # failed rows: neutral values, kept
    assert "removable copies" in result.stdout and "outliers" in result.stdout


def test_score_resumes_from_its_directory_and_refuses_another_run(tmp_path: Path, encoder_checkpoint: Path,
                                                                  digits_folder, capsys) -> None:
    """--resume-dir: a second identical command reuses the fit and every shard and writes the same table
    (failed rows included); the same directory with another seed is a one-line usage error."""
    folder = digits_folder(tmp_path / "imgs", count=50, corrupt=3)
    base = ["score", str(folder), "--encoder", str(encoder_checkpoint), "--image-size", "8", "--channels", "1",
            "--rank", "4", "--draws", "2", "--no-findings", "--resume-dir", str(tmp_path / "run"), "--shard-size", "20"]
    assert main([*base, "--out", str(tmp_path / "a.parquet")]) == 0
    assert "0 of 3 shards reused" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "b.parquet")]) == 0
    assert "3 of 3 shards reused, fit reused" in capsys.readouterr().out
    first, second = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(first, second)
    assert len(first) == 50 and first["error"].notna().sum() == 3
    assert main([*base, "--seed", "1", "--out", str(tmp_path / "c.parquet")]) == 2
    err = capsys.readouterr().err
    assert "holds a scoring run with another config" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.parquet").exists()


def test_score_under_torchrun_equals_one_process(tmp_path: Path, encoder_checkpoint: Path, digits_folder,
                                                 capsys) -> None:
    """Two gloo ranks launched by torchrun (EK-FAC on PCA projections: factor sums and refitted eigenvalues
    are merged across ranks) write the same table as one process, failed rows included; with --resume-dir
    the ranks share the shards, and one process then resumes from their directory with nothing left to do."""
    folder = digits_folder(tmp_path / "imgs", count=61, corrupt=2)
    args = ["score", str(folder), "--encoder", str(encoder_checkpoint), "--image-size", "8", "--channels", "1",
            "--rank", "4", "--draws", "3", "--curvature", "ekfac", "--projection", "pca", "--precision", "fp64",
            "--no-findings"]
    assert main([*args, "--out", str(tmp_path / "one.parquet")]) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "influencegate.cli"]
    resume = ["--resume-dir", str(tmp_path / "run"), "--shard-size", "20"]
    for name, extra in (("two", []), ("two_resumable", resume)):
        result = subprocess.run([*launch, *args, *extra, "--out", str(tmp_path / f"{name}.parquet")],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    one = pd.read_parquet(tmp_path / "one.parquet")
    for name in ("two", "two_resumable"):
        two = pd.read_parquet(tmp_path / f"{name}.parquet")
        assert len(two) == 61 and two["error"].notna().sum() == 2
        pd.testing.assert_frame_equal(one, two, check_exact=False, rtol=1e-8)
    assert "0 of 3 shards reused" in result.stdout  # 59 readable samples: shards 0 and 2 on rank 0, 1 on rank 1
    capsys.readouterr()
    assert main([*args, *resume, "--out", str(tmp_path / "resumed.parquet")]) == 0
    assert "3 of 3 shards reused, fit reused" in capsys.readouterr().out
    pd.testing.assert_frame_equal(one, pd.read_parquet(tmp_path / "resumed.parquet"), check_exact=False, rtol=1e-8)
    # a directory of another run: rank 0 finds out, and every rank stops with the same one-line error (no hang)
    result = subprocess.run([*launch, *args, *resume, "--seed", "1", "--out", str(tmp_path / "other.parquet")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and not (tmp_path / "other.parquet").exists()
    assert result.stderr.count("holds a scoring run with another config") == 2


def test_torchrun_needs_a_fixed_encoder(monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["score", "digits", "--pretrain", "simclr"]) == 2
    assert "pretrain once" in capsys.readouterr().err
