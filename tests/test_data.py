"""Tests of influencegate.data: digits, folders, manifests, error rows, versions, bad sources."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from influencegate.data import (
    CIFAR10_MEAN,
    DatasetError,
    ImageDataset,
    denormalize,
    load_images,
)


def _write_image(path: Path, seed: int, size: int = 12, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    _write_image(root / "a.png", 0)
    _write_image(root / "cats" / "b.jpg", 1)
    _write_image(root / "cats" / "deep" / "c.png", 2, mode="L")
    _write_image(root / "d.png", 3, mode="RGBA")
    (root / "broken.png").write_bytes(b"definitely not a png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_digits_ids_shapes_and_labels() -> None:
    ds = load_images("digits")
    assert len(ds) == 1797 and ds.image_shape == (1, 8, 8)
    assert ds.sample_ids[0] == "digits/00000" and ds.sample_ids[-1] == "digits/01796"
    assert list(ds.records.columns) == ["sample_id", "path", "label", "error"]
    assert ds.records["error"].isna().all() and ds.failed.empty
    sample_id, image = ds[5]
    assert sample_id == "digits/00005" and image.dtype == torch.float32 and image.shape == (1, 8, 8)
    assert abs(ds.images.mean().item()) < 1e-3 and abs(ds.images.std().item() - 1) < 1e-3
    pixels = denormalize(ds.images, ds)
    assert pixels.min() >= 0 and pixels.max() <= 1
    original = torch.from_numpy(load_digits().images[:3]).float() / 16
    assert torch.allclose(pixels[:3, 0], original, atol=1e-4)
    resized = load_images("digits", image_size=32, channels=3)
    assert resized.image_shape == (3, 32, 32) and resized.version == ds.version


def test_folder_recursive_with_corrupt_file(image_folder: Path) -> None:
    ds = load_images(image_folder)
    assert ds.name == "imgs" and ds.image_shape == (3, 32, 32)
    assert ds.sample_ids == ["a.png", "cats/b.jpg", "cats/deep/c.png", "d.png"]
    assert list(ds.records["sample_id"]) == ["a.png", "broken.png", "cats/b.jpg", "cats/deep/c.png", "d.png"]
    failed = ds.failed
    assert list(failed["sample_id"]) == ["broken.png"]
    assert failed["error"].iloc[0].startswith("unreadable image: cannot identify image file")
    assert ds.records.set_index("sample_id").loc["a.png", "path"] == str((image_folder / "a.png").absolute())
    assert torch.isfinite(ds.images).all()
    # exact decode: a.png resized to its own size and normalised with the CIFAR statistics
    same_size = load_images(image_folder, image_size=12)
    raw = np.asarray(Image.open(image_folder / "a.png"), dtype=np.float32) / 255
    expected = (torch.from_numpy(raw).permute(2, 0, 1) - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(
        same_size.std
    ).view(3, 1, 1)
    assert torch.allclose(same_size[0][1], expected, atol=1e-5)
    gray = load_images(image_folder, image_size=16, channels=1)
    assert gray.image_shape == (1, 16, 16) and len(gray) == 4


def _manifest_rows(root: Path) -> list[dict]:
    _write_image(root / "img" / "x.png", 10)
    _write_image(root / "img" / "y.png", 11)
    outside = root.parent / "elsewhere" / "z.png"
    _write_image(outside, 12)
    return [
        {"path": "img/x.png", "sample_id": "sx", "race": "a", "caption": "a cat"},
        {"path": "img/y.png", "sample_id": None, "race": "b", "caption": "a dog"},
        {"path": str(outside), "sample_id": "sz", "race": "a", "caption": "a bird"},
        {"path": "img/missing.png", "sample_id": "sm", "race": "b", "caption": "nothing"},
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_manifest_formats(tmp_path: Path, suffix: str) -> None:
    root = tmp_path / "data"
    table = pd.DataFrame(_manifest_rows(root))
    manifest = root / f"manifest{suffix}"
    if suffix == ".csv":
        table.to_csv(manifest, index=False)
    elif suffix == ".jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in table.to_dict("records")))
    else:
        table.to_parquet(manifest)
    ds = load_images(manifest, image_size=8)
    assert ds.name == "manifest"
    assert ds.sample_ids == ["sx", "img/y.png", "sz"]
    assert list(ds.records.columns) == ["sample_id", "path", "race", "caption", "frames", "error"]
    assert list(ds.records["race"]) == ["a", "b", "a", "b"]
    missing = ds.records.set_index("sample_id").loc["sm"]
    assert missing["error"] == "missing file" and missing["path"] == str((root / "img" / "missing.png").absolute())
    assert ds.image_shape == (3, 8, 8)


def test_duplicate_sample_id_becomes_error_row(tmp_path: Path) -> None:
    _write_image(tmp_path / "p.png", 0)
    _write_image(tmp_path / "q.png", 1)
    pd.DataFrame({"path": ["p.png", "q.png"], "sample_id": ["same", "same"]}).to_csv(tmp_path / "m.csv", index=False)
    ds = load_images(tmp_path / "m.csv")
    assert ds.sample_ids == ["same"]
    assert ds.records["error"].iloc[1].startswith("duplicate sample_id")
    assert len(ds.failed) == 1


def test_bad_mode_becomes_error_row(tmp_path: Path) -> None:
    _write_image(tmp_path / "ok.png", 0)
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    ds = load_images(tmp_path)
    assert ds.sample_ids == ["ok.png"]
    assert "unsupported image mode" in ds.failed["error"].iloc[0]


def test_version_is_location_free_and_content_sensitive(image_folder: Path, tmp_path: Path) -> None:
    version = load_images(image_folder).version
    copy = tmp_path / "moved" / "other_name"
    shutil.copytree(image_folder, copy)
    assert load_images(copy).version == version
    data = bytearray((copy / "a.png").read_bytes())
    data[-20] ^= 1  # one byte inside the image data
    (copy / "a.png").write_bytes(bytes(data))
    assert load_images(copy).version != version


def test_subset_and_from_tensors() -> None:
    ds = load_images("digits")
    sub = ds.subset(["digits/00010", "digits/00003"])
    assert sub.sample_ids == ["digits/00010", "digits/00003"] and len(sub) == 2
    assert torch.equal(sub.images[0], ds.images[10]) and list(sub.records["label"]) == [0, 3]
    assert sub.version != ds.version
    with pytest.raises(KeyError, match="digits/99999"):
        ds.subset(["digits/99999"])
    wrapped = ImageDataset.from_tensors(ds.images[:5], ds.sample_ids[:5])
    assert wrapped.name == "tensors" and wrapped.image_shape == (1, 8, 8) and len(wrapped.records) == 5
    assert wrapped.version == ImageDataset.from_tensors(ds.images[:5].clone(), ds.sample_ids[:5]).version
    assert wrapped.version != ImageDataset.from_tensors(ds.images[:5] + 1, ds.sample_ids[:5]).version


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "nope", "dataset source not found"),
        (lambda p: (p / "m.csv").write_text("file,label\na.png,1\n") and p / "m.csv", "no 'path' column"),
        (lambda p: (p / "data.txt").write_text("x") and p / "data.txt", "unknown dataset source extension"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no image files found"),
    ],
)
def test_bad_source_raises_dataset_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_images(make(tmp_path))
