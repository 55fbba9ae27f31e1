"""WebDataset tar shards and Parquet image-bytes files: same pixels as decoding the files directly, stable ids,
error rows for bad members and broken shards, the same result with DataLoader workers."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from influencegate.data import DatasetError, load_images
from influencegate.data.shards import split_member
from shard_data import SIZE, make_samples, reference_decode, write_parquet, write_webdataset


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """40 samples as 4 WebDataset shards, as one Parquet file of each layout, and as plain files."""
    root = tmp_path_factory.mktemp("shards")
    samples = make_samples(40)
    files = root / "files"
    files.mkdir()
    for s in samples:
        (files / f"{s['key']}.{s['ext']}").write_bytes(s["image"])
    return {"samples": samples, "tars": write_webdataset(root / "wds", samples, per_shard=10),
            "parquet": write_parquet(root / "bytes.parquet", samples, struct=False),
            "parquet_struct": write_parquet(root / "hf.parquet", samples, struct=True), "files": files, "root": root}


def test_split_member_follows_webdataset() -> None:
    assert split_member("a/b.c.jpg") == ("a/b", "c.jpg")
    assert split_member("x.PNG") == ("x", "png")


@pytest.mark.parametrize("source", ["folder", "pattern", "glob", "parquet", "parquet_struct"])
def test_shards_decode_like_the_files(corpus: dict, source: str) -> None:
    location = {"folder": corpus["root"] / "wds", "pattern": corpus["root"] / "wds" / "{000000..000003}.tar",
                "glob": corpus["root"] / "wds" / "*.tar", "parquet": corpus["parquet"],
                "parquet_struct": corpus["parquet_struct"]}[source]
    ds = load_images(str(location), image_size=SIZE)
    assert len(ds) == 40 and ds.failed.empty
    expected = torch.stack([reference_decode(s["image"]) for s in corpus["samples"]])
    assert torch.allclose(ds.images, expected, atol=1e-6)
    files = load_images(corpus["files"], image_size=SIZE)
    assert torch.equal(ds.images, files.images)  # the same decode path as plain files
    assert list(ds.records["caption"]) == [s["caption"] for s in corpus["samples"]]
    if source.startswith("parquet"):
        assert ds.sample_ids[:2] == [f"{Path(location).stem}/sample_00000", f"{Path(location).stem}/sample_00001"]
    else:
        assert ds.sample_ids[:2] == ["000000/sample_00000", "000000/sample_00001"]
        assert ds.sample_ids[10] == "000001/sample_00010"
        assert list(ds.records["width"]) == list(range(40)) and ds.records["tags"].iloc[0] == '["x"]'


def test_workers_give_the_same_dataset(corpus: dict) -> None:
    serial = load_images(str(corpus["root"] / "wds"), image_size=SIZE)
    parallel = load_images(str(corpus["root"] / "wds"), image_size=SIZE, workers=2)
    assert parallel.sample_ids == serial.sample_ids and parallel.version == serial.version
    assert torch.equal(parallel.images, serial.images)
    files = load_images(corpus["files"], image_size=SIZE, workers=2)
    assert torch.equal(files.images, load_images(corpus["files"], image_size=SIZE).images)
    with pytest.raises(DatasetError, match="workers"):
        load_images(corpus["files"], workers=-1)


def test_corrupt_members_keep_their_rows(tmp_path: Path) -> None:
    samples = make_samples(40)
    bad = {3, 17}  # 5% of the members
    for i in bad:
        samples[i]["image"] = b"\xff\xd8 not really a jpeg" + bytes(20)
    samples[25].pop("image")  # a sample without an image member
    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "000000.tar")) as writer:
        for s in samples:
            writer.write({"__key__": s["key"], "txt": s["caption"], **({s["ext"]: s["image"]} if "image" in s else {})})
    ds = load_images(str(tmp_path / "000000.tar"), image_size=SIZE)
    assert len(ds.records) == 40 and len(ds) == 37
    failed = ds.failed.set_index("sample_id")["error"]
    assert sorted(failed.index) == ["000000/sample_00003", "000000/sample_00017", "000000/sample_00025"]
    assert failed["000000/sample_00003"].startswith("unreadable image")
    assert failed["000000/sample_00025"].startswith("no image member")


def test_broken_and_missing_shards_are_rows(corpus: dict, tmp_path: Path) -> None:
    data = corpus["tars"][0].read_bytes()
    (tmp_path / "000000.tar").write_bytes(corpus["tars"][1].read_bytes())
    (tmp_path / "000001.tar").write_bytes(data[: len(data) // 2])  # cut in the middle of a member
    ds = load_images(str(tmp_path / "{000000..000002}.tar"), image_size=SIZE)
    errors = ds.failed.set_index("sample_id")["error"]
    assert "000002" in errors.index and errors["000002"] == "missing shard"
    assert "000001/#rest" in errors.index and errors["000001/#rest"].startswith("unreadable shard after")
    kept = [s for s in ds.sample_ids if s.startswith("000001/")]
    assert 0 < len(kept) < 10  # the samples before the cut are kept
    assert len([s for s in ds.sample_ids if s.startswith("000000/")]) == 10
    # a gzip-compressed shard reads like a plain one
    with tarfile.open(tmp_path / "z.tar.gz", "w:gz") as archive:
        for name in ("k1.png", "k1.txt"):
            payload = corpus["samples"][1]["image"] if name.endswith("png") else b"hello"
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    gz = load_images(str(tmp_path / "z.tar.gz"), image_size=SIZE)
    assert gz.sample_ids == ["z/k1"] and gz.records["caption"].tolist() == ["hello"]


def test_pairs_from_shards(corpus: dict) -> None:
    from influencegate.data import load_pairs

    pairs = load_pairs(str(corpus["parquet"]), image_size=SIZE)
    assert len(pairs) == 40 and pairs.records["caption"].iloc[5] == "a photo number 5"


def test_parquet_without_images_is_a_manifest(tmp_path: Path, corpus: dict) -> None:
    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"path": [str(p) for p in sorted(corpus["files"].iterdir())[:3]]}).to_parquet(manifest)
    ds = load_images(str(manifest), image_size=SIZE)
    assert len(ds) == 3 and ds.sample_ids[0].endswith(".jpg")
    with pytest.raises(DatasetError, match="no shard matches"):
        load_images(str(tmp_path / "nothing-{000..003}.tar"))
