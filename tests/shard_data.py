"""Shard fixtures shared by the shard and object-store tests: random images and the WebDataset/Parquet files
holding them (imported by name: pytest puts tests/ on sys.path)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

SIZE = 16


def encoded(seed: int, fmt: str) -> bytes:
    """A random RGB image of a random size (8..40 px a side), encoded as PNG or JPEG."""
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(8, 41, 2))
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def reference_decode(data: bytes, size: int = SIZE) -> torch.Tensor:
    """Decode the file bytes directly with PIL (RGB, bilinear resize) and normalise like the loader."""
    from influencegate.data import CIFAR10_MEAN, CIFAR10_STD

    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    tensor = torch.from_numpy(pixels / 255.0).permute(2, 0, 1)
    return (tensor - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR10_STD).view(3, 1, 1)


def make_samples(count: int, offset: int = 0) -> list[dict]:
    return [{"key": f"sample_{i:05d}", "image": encoded(i, "PNG" if i % 2 else "JPEG"),
             "ext": "png" if i % 2 else "jpg", "caption": f"a photo number {i}", "meta": {"width": i, "tags": ["x"]}}
            for i in range(offset, offset + count)]


def write_webdataset(folder: Path, samples: list[dict], per_shard: int) -> list[Path]:
    """Shards written by the webdataset library itself (its TarWriter), per_shard samples each."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, start in enumerate(range(0, len(samples), per_shard)):
        path = folder / f"{shard:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for s in samples[start:start + per_shard]:
                writer.write({"__key__": s["key"], s["ext"]: s["image"], "txt": s["caption"], "json": s["meta"]})
        paths.append(path)
    return paths


def write_parquet(path: Path, samples: list[dict], struct: bool) -> Path:
    """One Parquet file: the image as raw bytes, or as the Hugging Face Image struct {bytes, path}."""
    rows = [{"key": s["key"], "image": {"bytes": s["image"], "path": None} if struct else s["image"],
             "caption": s["caption"]} for s in samples]
    pd.DataFrame(rows).to_parquet(path)
    return path
