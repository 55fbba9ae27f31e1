"""influencegate.data.storage: one API for local paths and fsspec URLs."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from influencegate.data import storage


def test_patterns_expand_like_webdataset(tmp_path: Path) -> None:
    assert storage.expand("s3://b/{000008..000011}.tar") == [f"s3://b/0000{i:02d}.tar" for i in (8, 9, 10, 11)]
    assert storage.expand("s3://b/{train,val}/{0..1}.tar") == ["s3://b/train/0.tar", "s3://b/train/1.tar",
                                                               "s3://b/val/0.tar", "s3://b/val/1.tar"]
    for name in ("b.tar", "a.tar", ".hidden.tar"):
        (tmp_path / name).write_bytes(b"")
    assert storage.expand(f"file://{tmp_path}/*.tar") == [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    assert storage.is_pattern("x/{0..3}.tar") and storage.is_pattern("x/*.tar") and not storage.is_pattern("x/0.tar")
    with pytest.raises(storage.StorageError, match="backwards"):
        storage.expand("s3://b/{9..1}.tar")


def test_locations(tmp_path: Path) -> None:
    assert storage.normalise(f"file://{tmp_path}/a") == str(tmp_path / "a")
    assert storage.redact("s3://KEY:SECRET@bucket/x.tar") == "s3://bucket/x.tar"
    assert storage.redact("/local/with@sign") == "/local/with@sign"
    assert storage.parent("s3://bucket/a/b.tar") == "s3://bucket/a" and storage.basename("s3://bucket/a/") == "a"
    assert storage.join("s3://bucket/a", "b/c.png") == "s3://bucket/a/b/c.png"
    assert storage.relative_to("s3://bucket/a/b/c.png", "s3://bucket/a") == "b/c.png"
    assert storage.relative_to("s3://bucket/x.png", "s3://bucket/a") is None
    assert storage.relative_to(str(tmp_path / "x.png"), "s3://bucket") is None
    assert storage.suffix("s3://b/x.JPG") == ".jpg"


def test_memory_store_round_trip_and_walk() -> None:
    storage.write_text("memory://walk/a/b.txt", "hello")
    storage.write_bytes("memory://walk/.hidden/c.txt", b"x")
    storage.write_bytes("memory://walk/.hidden/e.txt", b"x")
    storage.write_bytes("memory://walk/a/.f.png", b"x")
    storage.write_bytes("memory://walk/d.png", b"y")
    assert storage.read_text("memory://walk/a/b.txt") == "hello"
    assert storage.is_dir("memory://walk/a") and storage.is_file("memory://walk/d.png")
    assert not storage.exists("memory://walk/nothing")
    skipped: Counter[str] = Counter()
    assert sorted(r for r, _ in storage.walk_files("memory://walk", skipped)) == ["a/b.txt", "d.png"]
    assert skipped == {"hidden": 2}  # the hidden folder once, the hidden file
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("memory://walk/nothing")


def test_local_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "table.parquet"
    storage.write_bytes(target, b"old")
    assert target.read_bytes() == b"old"

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes(target, b"new and longer")
    assert target.read_bytes() == b"old"  # the old file is whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.parquet"]  # no temporary left


def test_missing_driver_names_the_extra() -> None:
    with pytest.raises(storage.StorageError, match=r"pip install 'influencegate\[gcs\]'"):
        storage.read_bytes("gs://bucket/x.png")


def test_nothing_in_the_package_unpickles_code() -> None:
    """Every torch.load in the package passes weights_only=True; no pickle.load(s), no np.load(allow_pickle=True);
    torch.jit.load only behind the explicit torchscript: spec."""
    import ast

    root = Path(__file__).resolve().parents[1]
    offenders, jit_calls = [], []
    for folder in ("influencegate", "steps", "pipelines", "integrations"):
        for file in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                owner = ast.unparse(node.func.value)
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                where = f"{file.relative_to(root)}:{node.lineno}"
                if owner == "torch" and node.func.attr == "load" and keywords.get("weights_only") != "True":
                    offenders.append(where)
                if owner == "pickle" and node.func.attr in ("load", "loads"):
                    offenders.append(where)
                if owner in ("np", "numpy") and node.func.attr == "load" and keywords.get("allow_pickle") == "True":
                    offenders.append(where)
                if owner == "torch.jit" and node.func.attr == "load":
                    jit_calls.append(where)
    assert not offenders, offenders
    assert [w.split(":")[0] for w in jit_calls] == ["influencegate/models/weights.py"], jit_calls


def test_an_existing_name_with_pattern_characters_is_not_a_pattern(tmp_path: Path, digits_folder) -> None:
    from influencegate.data import DatasetError, load_images

    folder = digits_folder(tmp_path / "photos [2019]", count=3)
    assert not storage.is_pattern(folder) and storage.is_pattern(f"{folder}/*.png")
    assert len(load_images(folder, image_size=8, channels=1)) == 3
    with pytest.raises(DatasetError):  # a pattern names shards; images matched by a glob are not shards
        load_images(f"{tmp_path}/photos*/*.png", image_size=8, channels=1)
