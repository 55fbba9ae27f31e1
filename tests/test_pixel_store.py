"""The disk-backed pixel store: loaded images live as uint8 in a memmap file, float32 only per batch read."""
from __future__ import annotations

import gc
import io
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from influencegate.data import CIFAR10_GRAY_MEAN, CIFAR10_GRAY_STD, CIFAR10_MEAN, CIFAR10_STD, load_images
from influencegate.findings.duplicates import Duplicates
from influencegate.findings.unusable import Unusable


def _float_path(files: list[Path], size: int, channels: int) -> torch.Tensor:
    """What the loader computed before the store: every image decoded (PIL, bilinear), stacked as uint8 and
    normalised in one float32 tensor (pixel / 255 - mean) / std."""
    mode, mean, std = ("L", CIFAR10_GRAY_MEAN, CIFAR10_GRAY_STD) if channels == 1 else ("RGB", CIFAR10_MEAN, CIFAR10_STD)
    pixels = []
    for path in files:
        with Image.open(path) as image:
            resized = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        pixels.append(np.asarray(resized, np.uint8).reshape(size, size, channels).transpose(2, 0, 1))
    stacked = torch.from_numpy(np.stack(pixels)).to(torch.float32).div_(255.0)
    return (stacked - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _png_folder(root: Path, count: int, side: int = 12, seed: int = 0) -> Path:
    """count random RGB PNGs of random sizes (side .. 2 side - 1 px a side), so that the loader resizes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(side, 2 * side, 2))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"p{i:05d}.png")
    return root


def test_digits_folder_round_trip_is_exact(tmp_path: Path, digits_folder) -> None:
    """Grey 8 x 8 digits PNGs read back bit for bit as the old all-in-memory float path gave them."""
    folder = digits_folder(tmp_path / "digits", count=150)
    ds = load_images(folder, image_size=8, channels=1)
    expected = _float_path(sorted(folder.glob("*.png")), 8, 1)
    assert torch.equal(ds.images, expected)
    assert torch.equal(torch.cat(list(ds.batches(64))), expected)
    assert torch.equal(ds[7][1], expected[7]) and ds.image_shape == (1, 8, 8)


def test_png_folder_round_trip_resized_and_store_file(tmp_path: Path) -> None:
    """RGB PNGs of mixed sizes are resized as before (exact equality) and stored as uint8 N x C x H x W in
    one file that is removed once the dataset is collected."""
    folder = _png_folder(tmp_path / "pngs", 40)
    ds = load_images(folder, image_size=16, workers=2)
    assert torch.equal(ds.images, _float_path(sorted(folder.glob("*.png")), 16, 3))
    store = Path(ds.store_path)
    assert store.is_file() and store.stat().st_size == 40 * 3 * 16 * 16
    del ds
    gc.collect()
    assert not store.exists() and not store.parent.exists()


def test_store_dir_and_no_full_copy_in_memory(tmp_path: Path) -> None:
    """Loading 2,000 images of 48 x 48 RGB (13.8 MB as uint8, 55 MB as float32) never holds them all: the
    peak of traced allocations (numpy and Python; decoded pixels go straight to the file) stays below a
    quarter of the uint8 size, and reading every batch adds no more than about one batch."""
    folder = _png_folder(tmp_path / "many", 2000, side=48, seed=1)
    tracemalloc.start()
    try:
        ds = load_images(folder, image_size=48, store_dir=tmp_path / "stores")
        _, load_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        means = [float(batch.mean()) for batch in ds.batches(128)]
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    uint8_bytes = 2000 * 3 * 48 * 48
    assert len(ds) == 2000 and len(means) == 16
    assert load_peak < uint8_bytes / 4, f"{load_peak / 2**20:.1f} MiB traced while loading"
    assert read_peak < 2 * 128 * 3 * 48 * 48 + 2**20, f"{read_peak / 2**20:.1f} MiB traced while reading"
    assert Path(ds.store_path).parent.parent == tmp_path / "stores"


def test_subset_getitems_and_pixels_view_share_the_file(tmp_path: Path) -> None:
    ds = load_images(_png_folder(tmp_path / "pngs", 30), image_size=8)
    everything = ds.images
    ids = [ds.sample_ids[i] for i in (9, 2, 17, 2 + 1)]
    sub = ds.subset(ids)
    assert sub.store_path == ds.store_path and sub.sample_ids == ids
    assert torch.equal(sub.images, everything[[9, 2, 17, 3]])
    assert torch.equal(sub.subset(ids[2:]).images, everything[[17, 3]])
    assert [sid for sid, _ in ds.__getitems__([4, 0])] == [ds.sample_ids[4], ds.sample_ids[0]]
    assert torch.equal(torch.stack([x for _, x in ds.__getitems__([4, 0])]), everything[[4, 0]])
    view = ds.pixels
    assert len(view) == 30 and view.shape == (30, 3, 8, 8) and torch.equal(view[5:9], everything[5:9])
    assert torch.equal(view[np.array([1, 28])], everything[[1, 28]]) and torch.equal(view[-1], everything[-1])
    assert np.array_equal(np.asarray(view), everything.numpy())
    assert ds.subset([]).images.shape == (0, 3, 8, 8)


def test_pickled_dataset_reads_the_same_file_and_does_not_own_it(tmp_path: Path) -> None:
    """A pickle carries the store's path (a few bytes per row of ids), not the pixels; the copy reads the
    same images, and collecting it leaves the original's file in place."""
    ds = load_images(_png_folder(tmp_path / "pngs", 25), image_size=16)
    blob = pickle.dumps(ds)
    assert len(blob) < 25 * 3 * 16 * 16
    copy = pickle.loads(blob)
    assert copy.store_path == ds.store_path and torch.equal(copy.images, ds.images)
    assert copy.version == ds.version and copy.sample_ids == ds.sample_ids
    del copy
    gc.collect()
    assert Path(ds.store_path).is_file() and torch.equal(ds.batch([0]), ds.images[:1])


def test_findings_read_the_view_as_they_read_the_tensor(tmp_path: Path) -> None:
    """Unusable and exact duplicates give the same table from ``dataset.pixels`` (block reads) as from the
    full tensor, with blocks smaller than the data."""
    folder = _png_folder(tmp_path / "pngs", 20)
    Image.new("RGB", (12, 12), (0, 0, 0)).save(folder / "blank.png")
    (folder / "copy.png").write_bytes((folder / "p00003.png").read_bytes())
    buffer = io.BytesIO()
    Image.open(folder / "p00004.png").save(buffer, format="PNG", compress_level=1)  # same pixels, other bytes
    (folder / "recoded.png").write_bytes(buffer.getvalue())
    ds = load_images(folder, image_size=12)
    table = pd.DataFrame({"sample_id": ds.sample_ids})
    kwargs = {"sample_ids": ds.sample_ids, "mean": ds.mean, "std": ds.std}
    from_view = Unusable(block=7).find(table, images=ds.pixels, **kwargs)
    pd.testing.assert_frame_equal(from_view, Unusable(block=7).find(table, images=ds.images, **kwargs))
    assert from_view.loc[ds.sample_ids.index("blank.png"), "is_unusable"]
    dup = Duplicates(near="none").find(table, None, images=ds.pixels, sample_ids=ds.sample_ids)
    pd.testing.assert_frame_equal(dup, Duplicates(near="none").find(table, None, images=ds.images,
                                                                    sample_ids=ds.sample_ids))
    assert dup["is_duplicate"].sum() == 2


@pytest.mark.parametrize("bad", [np.zeros((3, 8, 8), np.float32), np.zeros((3, 4, 4), np.uint8)])
def test_writer_refuses_other_shapes_and_dtypes(tmp_path: Path, bad: np.ndarray) -> None:
    from influencegate.data.store import PixelWriter

    writer = PixelWriter((3, 8, 8), tmp_path)
    assert writer.append(np.zeros((3, 8, 8), np.uint8)) == 0
    with pytest.raises(ValueError, match="expected uint8"):
        writer.append(bad)
    assert writer.finish().shape == (1, 3, 8, 8)


def test_a_killed_process_store_folder_is_removed_by_the_next_store(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from influencegate.data.store import PixelWriter

    script = ("import os, sys, numpy as np; from influencegate.data.store import PixelWriter; "
              "w = PixelWriter((1, 2, 2), sys.argv[1]); w.append(np.zeros((1, 2, 2), np.uint8)); store = w.finish(); "
              "print(w.folder, flush=True); os.kill(os.getpid(), 9)")
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    orphan = Path(killed.stdout.strip())
    assert orphan.parent == tmp_path and (orphan / "pixels.u8").is_file()  # the kill left it behind
    other_host = tmp_path / "influencegate-pixels-otherhost-1-abc"
    other_host.mkdir()
    running = PixelWriter((1, 2, 2), tmp_path)  # this process is alive: its folder stays
    later = PixelWriter((1, 2, 2), tmp_path)
    assert not orphan.exists()
    assert other_host.is_dir() and Path(running.folder).is_dir() and Path(later.folder).is_dir()
    running.finish(), later.finish()


def _rss_file_kib() -> int:
    """This process's resident file-backed pages (KiB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise RuntimeError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux /proc")
def test_mapped_array_reads_rows_and_gives_pages_back(tmp_path: Path) -> None:
    """A pass over a 128 MiB file copies the right rows and keeps at most about RELEASE_BYTES (32 MiB) of it
    resident; the same pass through np.memmap (the old reader) keeps every page it touched resident."""
    from influencegate.data.mapped import RELEASE_BYTES, MappedArray

    rows, row = 8192, 16384  # 128 MiB of uint8
    data = np.random.default_rng(0).integers(0, 256, size=(rows, row), dtype=np.uint8)
    path = tmp_path / "rows.bin"
    data.tofile(path)
    mapped = MappedArray(path, np.uint8, (rows, row))
    np.testing.assert_array_equal(mapped.read(np.array([7, 3, 8000])), data[[7, 3, 8000]])
    before = _rss_file_kib()
    most = 0
    for start in range(0, rows, 256):
        np.testing.assert_array_equal(mapped.read(slice(start, start + 256)), data[start:start + 256])
        most = max(most, _rss_file_kib() - before)
    plain = np.memmap(path, dtype=np.uint8, mode="r", shape=(rows, row))
    before = _rss_file_kib()
    for start in range(0, rows, 256):
        np.array(plain[start:start + 256])
    kept = _rss_file_kib() - before
    del plain
    assert kept > 100 * 1024  # the plain memmap: most of the 128 MiB resident
    assert most <= (RELEASE_BYTES >> 10) + 4 * 1024
