"""Data sources in an object store: a real S3-compatible server (moto, server mode, on 127.0.0.1) behind s3fs.

The same data read from the bucket and from the local disk gives the same ids, pixels and version id."""
from __future__ import annotations

import os
from pathlib import Path

import boto3
import pandas as pd
import pytest
import torch

from influencegate.cli import main
from influencegate.data import DatasetError, load_images
from influencegate.data import storage

from shard_data import make_samples, write_webdataset


def upload(folder: Path, bucket: str, prefix: str) -> str:
    """Every file under `folder` to s3://bucket/prefix/<relative path>; returns that folder's URL."""
    client = boto3.client("s3")
    name = bucket.removeprefix("s3://")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), name, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"{bucket}/{prefix}"


def test_folder_in_a_bucket_equals_the_local_folder(s3_bucket: str, tmp_path: Path, digits_folder) -> None:
    local = digits_folder(tmp_path / "digits", count=30, corrupt=2)
    url = upload(local, s3_bucket, "images")
    remote, here = load_images(url, image_size=8, channels=1), load_images(local, image_size=8, channels=1)
    assert remote.sample_ids == here.sample_ids and torch.equal(remote.images, here.images)
    assert remote.version == here.version  # location-free: the same bytes and ids wherever they sit
    assert remote.name == "images" and remote.source == url
    assert remote.records["path"].iloc[0] == f"{url}/img_0000.png"
    assert list(remote.failed["sample_id"]) == ["img_0000.png", "img_0001.png"]
    assert torch.equal(load_images(url, image_size=8, channels=1, workers=2).images, here.images)


def test_manifest_with_s3_paths(s3_bucket: str, tmp_path: Path, digits_folder) -> None:
    local = digits_folder(tmp_path / "d", count=12)
    url = upload(local, s3_bucket, "raw")
    rows = pd.DataFrame({"path": [f"{url}/img_{i:04d}.png" for i in range(12)] + [f"{url}/gone.png"],
                         "group": ["a", "b"] * 6 + ["a"]})
    storage.write_bytes(f"{s3_bucket}/manifests/v1.csv", rows.to_csv(index=False).encode())
    # relative paths in a manifest are taken from the manifest's own folder in the bucket
    storage.write_bytes(f"{s3_bucket}/raw/relative.jsonl",
                        rows.assign(path=[p.rsplit("/", 1)[1] for p in rows["path"]]).to_json(orient="records", lines=True).encode())
    for manifest in (f"{s3_bucket}/manifests/v1.csv", f"{s3_bucket}/raw/relative.jsonl"):
        ds = load_images(manifest, image_size=8, channels=1)
        assert len(ds) == 12 and list(ds.records["group"][:2]) == ["a", "b"]
        assert ds.failed["error"].tolist() == ["missing file"]
        assert torch.equal(ds.images, load_images(local, image_size=8, channels=1).images)


def test_webdataset_shards_in_a_bucket(s3_bucket: str, tmp_path: Path) -> None:
    write_webdataset(tmp_path / "wds", make_samples(24), per_shard=6)
    url = upload(tmp_path / "wds", s3_bucket, "shards")
    local = load_images(str(tmp_path / "wds"), image_size=16)
    for workers in (0, 2):
        remote = load_images(f"{url}/{{000000..000003}}.tar", image_size=16, workers=workers)
        assert remote.sample_ids == local.sample_ids and remote.version == local.version
        assert torch.equal(remote.images, local.images)
    missing = load_images(f"{url}/{{000000..000004}}.tar", image_size=16)
    assert missing.failed.set_index("sample_id").loc["000004", "error"] == "missing shard"


def test_bad_locations_are_one_line_errors(s3_bucket: str) -> None:
    with pytest.raises(DatasetError, match="dataset source not found"):
        load_images(f"{s3_bucket}/nothing-here")
    with pytest.raises(DatasetError, match="no shard matches"):
        load_images(f"{s3_bucket}/none/{{000..002}}.tar")
    with pytest.raises(DatasetError, match=r"influencegate\[gcs\]"):
        load_images("gs://some-bucket/images")


def test_cli_scores_shards_from_the_bucket(s3_bucket: str, tmp_path: Path, encoder_checkpoint: Path, digits_folder,
                                           capsys: pytest.CaptureFixture) -> None:
    folder = digits_folder(tmp_path / "d", count=40)
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "000000.tar")) as writer:
        for path in sorted(folder.iterdir()):
            writer.write({"__key__": path.stem, "png": path.read_bytes(), "txt": f"digit {path.stem}"})
    url = upload(tmp_path, s3_bucket, "data")
    out = f"{s3_bucket}/results/scores.parquet"
    code = main(["score", f"{url}/000000.tar", "--encoder", str(encoder_checkpoint), "--image-size", "8",
                 "--channels", "1", "--rank", "4", "--draws", "2", "--workers", "2", "--no-findings", "--out", out])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    table = pd.read_parquet(out)
    assert len(table) == 40 and table["influence"].notna().all()
    assert table["sample_id"].iloc[0] == "000000/img_0000" and table["caption"].iloc[0] == "digit img_0000"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in printed.out + printed.err


def test_pair_manifest_in_a_bucket(s3_bucket: str, tmp_path: Path, digits_folder) -> None:
    from influencegate.data import load_pairs

    url = upload(digits_folder(tmp_path / "d", count=8), s3_bucket, "pairs")
    rows = pd.DataFrame({"path": [f"img_{i:04d}.png" for i in range(8)], "caption": [f"digit {i}" for i in range(8)]})
    storage.write_bytes(f"{url}/pairs.parquet", rows.to_parquet(index=False))
    pairs = load_pairs(f"{url}/pairs.parquet", image_size=8, channels=1)
    assert len(pairs) == 8 and pairs.records["caption"].tolist() == rows["caption"].tolist()
    assert pairs.records["path"].iloc[0] == f"{url}/img_0000.png"
