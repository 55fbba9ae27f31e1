"""Resumable scoring in an object store (s3 on a moto server, memory://) and a resume directory that cannot
run code: curvature.pt holds tensors and primitives only, loaded with weights_only=True; unreadable files are
one ValueError (a one-line CLI error), never a traceback and never executed."""
from __future__ import annotations

import io
import pickle
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

from influencegate import InfluenceConfig, InfluenceScorer
from influencegate.cli import main
from influencegate.data import ImageDataset
from influencegate.influence import score_resumable
from influencegate.influence.fit_state import fit_state, restore_fit

# 8 x 8 grayscale digits, the shared encoder, a fast scorer (conftest.FAST_SCORER-like)
CLI_SCORER = ["--image-size", "8", "--channels", "1", "--rank", "4", "--draws", "2", "--no-findings"]


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).double()


def _config(**overrides) -> InfluenceConfig:
    return InfluenceConfig(**{"precision": "fp64", "draws": 2, "batch_size": 10, "progress": False, "sigma": 0.3,
                              "rank": 3, **overrides})


@pytest.fixture(scope="module")
def tiny_data() -> ImageDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(36, 1, 4, 4, generator=gen, dtype=torch.float64)
    return ImageDataset.from_tensors(images, [f"img{i:02d}" for i in range(36)])


def _only_plain_values(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_plain_values(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_plain_values(v) for v in value)
    return isinstance(value, (torch.Tensor, bool, int, float, str, type(None)))


@pytest.mark.parametrize("options", [{"curvature": "identity"}, {"curvature": "diagonal"},
                                     {"curvature": "raw", "inverse_rank": None},
                                     {"curvature": "raw", "inverse_rank": 4},
                                     {"curvature": "kfac"}, {"curvature": "ekfac", "projection": "pca"}])
def test_fit_state_is_plain_tensors_and_restores_the_same_scores(options, tiny_data) -> None:
    """Every curvature kind: the stored fit is tensors and primitives, loads with weights_only=True and
    scores exactly like the fitted scorer."""
    cfg = _config(**options)
    fitted = InfluenceScorer(_tiny_cnn(), cfg).fit(tiny_data)
    buffer = io.BytesIO()
    torch.save(fit_state(fitted), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert _only_plain_values(state) and {c["kind"] for c in state["curvature"].values()} == {cfg.curvature}
    restored = InfluenceScorer(_tiny_cnn(), cfg)
    restore_fit(restored, state)
    assert restored.fit_draws == fitted.fit_draws
    pd.testing.assert_frame_equal(restored.score(tiny_data), fitted.score(tiny_data), check_exact=True)


def test_a_fit_of_the_previous_format_reads_as_a_fit_of_every_sample_and_a_bad_share_is_refused(tiny_data) -> None:
    """A /4 state (written before the share of fitted samples was stored) fitted every sample: share 1, so
    an appended version extends it with every new sample, as it did then."""
    cfg = _config(curvature="raw")
    state = fit_state(InfluenceScorer(_tiny_cnn(), cfg).fit(tiny_data))
    previous = {k: v for k, v in state.items() if k != "fit_share"} | {"format": "influencegate.fit/4"}
    restored = InfluenceScorer(_tiny_cnn(), cfg)
    restore_fit(restored, previous)
    assert restored.fit_share == 1.0
    for share in (0.0, 1.5, 1, "1"):
        with pytest.raises(ValueError, match="malformed fit_share"):
            restore_fit(InfluenceScorer(_tiny_cnn(), cfg), state | {"fit_share": share})
    with pytest.raises(ValueError, match="malformed fit"):
        restore_fit(InfluenceScorer(_tiny_cnn(), cfg), {k: v for k, v in state.items() if k != "fit_share"})


def test_a_memory_directory_equals_one_score_and_resumes(tiny_data) -> None:
    import fsspec

    directory = f"memory://influencegate-tests/{uuid.uuid4().hex}/run"
    cfg = _config(curvature="ekfac")
    expected = InfluenceScorer(_tiny_cnn(), cfg).fit(tiny_data).score(tiny_data)
    try:
        table, info = score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, directory, shard_size=10)
        assert info == {"shards": 4, "shards_reused": 0, "fit_reused": 0}
        pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9)
        memory = fsspec.filesystem("memory")
        assert sorted(p.rsplit("/", 1)[1] for p in memory.ls(directory, detail=False)) == [
            "curvature.pt", "run.json", "shard-00000.npz", "shard-00001.npz", "shard-00002.npz", "shard-00003.npz"]
        table, info = score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, directory, shard_size=10)
        assert info == {"shards": 4, "shards_reused": 4, "fit_reused": 1}
        pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9)
        with pytest.raises(ValueError, match="another config"):
            score_resumable(InfluenceScorer(_tiny_cnn(), _config(curvature="kfac")), tiny_data, directory)
        with pytest.raises(ValueError, match="another shard_size;"):  # said as such, not as "other sample ids"
            score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, directory, shard_size=7)
    finally:
        fsspec.filesystem("memory").rm(directory.rsplit("/", 1)[0], recursive=True)


class _Payload:
    """Unpickling this creates `marker` (what a crafted curvature.pt would do with a real command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("form", ["pickle", "torch.save"])
def test_a_crafted_curvature_file_is_refused_and_never_run(form, tiny_data, tmp_path: Path) -> None:
    cfg = _config(curvature="kfac")
    run = tmp_path / "run"
    score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, run, shard_size=18)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()  # the payload does run when unpickled without restriction

    marker = tmp_path / "pwned"
    if form == "pickle":
        (run / "curvature.pt").write_bytes(pickle.dumps({"fit_draws": 1, "curvature": _Payload(marker)}, protocol=2))
    else:
        torch.save({"fit_draws": 1, "curvature": _Payload(marker)}, run / "curvature.pt")
    with pytest.raises(ValueError, match="cannot be loaded as a fit of influencegate"):
        score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, run, shard_size=18)
    assert not marker.exists()

    # the same file in a directory without run.json: refused before anything is read
    (run / "run.json").unlink()
    with pytest.raises(ValueError, match="holds files but no run.json"):
        score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, run, shard_size=18)
    assert not marker.exists()


def test_a_foreign_fit_is_refused(tiny_data, tmp_path: Path) -> None:
    """A loadable file that is not this run's fit (another layout, another curvature kind) is refused."""
    cfg = _config(curvature="kfac")
    score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, tmp_path, shard_size=18)
    state = torch.load(tmp_path / "curvature.pt", weights_only=True)
    state["curvature"]["0"]["kind"] = "diagonal"
    torch.save(state, tmp_path / "curvature.pt")
    with pytest.raises(ValueError, match="is not a fit of this run: curvature of '0' is 'diagonal'"):
        score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, tmp_path, shard_size=18)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "curvature.pt")
    with pytest.raises(ValueError, match="not a fit of this version of influencegate"):
        score_resumable(InfluenceScorer(_tiny_cnn(), cfg), tiny_data, tmp_path, shard_size=18)


def test_unreadable_resume_files_are_one_line_cli_errors(tmp_path: Path, encoder_checkpoint: Path, digits_folder,
                                                        capsys) -> None:
    folder = digits_folder(tmp_path / "imgs", count=30)
    good = tmp_path / "good"

    def score(directory: Path) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["score", str(folder), "--encoder", str(encoder_checkpoint), *CLI_SCORER,
                     "--resume-dir", str(directory), "--shard-size", "10", "--out", str(tmp_path / "out.parquet")])
        return code, capsys.readouterr().err

    assert score(good)[0] == 0

    def broken(name: str, damage) -> Path:
        directory = tmp_path / name
        shutil.copytree(good, directory)
        damage(directory)
        return directory

    cases = {
        "truncated": (lambda d: (d / "curvature.pt").write_bytes((good / "curvature.pt").read_bytes()[:300]),
                      "curvature.pt cannot be loaded as a fit of influencegate"),
        "corrupt_shard": (lambda d: (d / "shard-00001.npz").write_bytes(b"PK\x03\x04 not a zip at all"),
                          "shard-00001.npz is not a readable shard"),
        "crafted": (lambda d: (d / "curvature.pt").write_bytes(pickle.dumps(_Payload(tmp_path / "pwned"))),
                    "curvature.pt cannot be loaded as a fit of influencegate"),
        "bad_run_json": (lambda d: (d / "run.json").write_text("{\"config\": "),
                         "run.json is not a run record of influencegate"),
    }
    for name, (damage, message) in cases.items():
        code, err = score(broken(name, damage))
        assert code == 2 and message in err, (name, err)
        lines = [line for line in err.strip().splitlines() if "%|" not in line]  # less the progress bars
        assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("influencegate: error: "), (name, err)
    assert not (tmp_path / "pwned").exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    code, err = score(a_file)
    assert code == 2 and "is a file; give a directory" in err and len(err.strip().splitlines()) == 1


def _shard_keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    import boto3

    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []) if o["Key"].rsplit("/", 1)[-1].startswith("shard-"))


def test_an_s3_resume_directory_survives_a_killed_run(tmp_path: Path, encoder_checkpoint: Path, digits_folder,
                                                      s3_endpoint: str, s3_bucket: str, capsys) -> None:
    """A run scoring into s3://bucket/run is SIGKILLed after its first shards; the same command then reuses
    the fit and those shards, and its table equals an uninterrupted local run."""
    folder = digits_folder(tmp_path / "imgs", count=120, corrupt=2)
    directory = f"{s3_bucket}/run"
    args = ["score", str(folder), "--encoder", str(encoder_checkpoint), *CLI_SCORER, "--curvature", "kfac"]
    resumable = [*args, "--resume-dir", directory, "--shard-size", "3"]  # 40 shards
    command = [sys.executable, "-m", "influencegate.cli", *resumable, "--out", str(tmp_path / "killed.parquet")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bucket, prefix = s3_bucket.removeprefix("s3://"), "run/"
    try:
        deadline = time.monotonic() + 240
        while not _shard_keys(s3_endpoint, bucket, prefix):
            assert process.poll() is None, f"the run ended before its first shard: {process.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "no shard appeared in the bucket"
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed; give it more shards"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    left = _shard_keys(s3_endpoint, bucket, prefix)
    assert 1 <= len(left) < 40 and not (tmp_path / "killed.parquet").exists()

    capsys.readouterr()
    assert main([*resumable, "--out", str(tmp_path / "resumed.parquet")]) == 0  # the same command, to the end
    assert f"{directory}: {len(left)} of 40 shards reused, fit reused" in capsys.readouterr().out
    assert len(_shard_keys(s3_endpoint, bucket, prefix)) == 40

    assert main([*args, "--out", str(tmp_path / "local.parquet")]) == 0  # the same encoder and config, in one go
    resumed, local = pd.read_parquet(tmp_path / "resumed.parquet"), pd.read_parquet(tmp_path / "local.parquet")
    assert len(resumed) == 120 and resumed["error"].notna().sum() == 2
    pd.testing.assert_frame_equal(resumed, local, check_exact=False, rtol=1e-5)

    import boto3  # an object in place of the directory: a one-line error, as on a local disk
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=bucket, Key="a_file", Body=b"not a directory")
    capsys.readouterr()
    assert main([*args, "--resume-dir", f"{s3_bucket}/a_file", "--out", str(tmp_path / "no.parquet")]) == 2
    assert "a_file is a file; give a directory" in capsys.readouterr().err
