"""The agreement benchmark's architecture field (benchmarks/encoder_agreement.py, issue 17): the SmallCNN cells keep
their cache keys, a CIFAR ResNet-18 cell trains, scores and reloads from the cache, and a stratified subset of
the photo patches is the same set of images every time."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import encoder_agreement as ea  # noqa: E402
from influencegate.data import ImageDataset  # noqa: E402


def tiny_runner(cache: Path, n: int, cached_only: bool = False) -> ea.Runner:
    """A Runner whose dataset "tiny" is n random 3 x 32 x 32 images with two alternating labels."""
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    data = ImageDataset.from_tensors(images, [f"t{i:03d}" for i in range(n)], name="tiny")
    runner = ea.Runner(cache, cached_only=cached_only)
    runner.data["tiny_n0"] = (data, np.arange(n) % 2)
    return runner


def test_small_cnn_cells_keep_their_cache_keys(tmp_path: Path) -> None:
    runner = ea.Runner(tmp_path)
    path, scores = runner._paths(ea.Cell("digits_simclr_e20", noise_ref=True), 1)
    assert path.name == "digits_simclr_e20_w8-16-32_s1.pt"
    assert sorted(p.name for p in scores.values()) == ["digits_simclr_e20_w8-16-32_s1_sigma0.2_k16_raw_n1.npy",
                                                       "digits_simclr_e20_w8-16-32_s1_sigma0.2_k16_raw_n101.npy"]
    resnet = ea.Cell("r", dataset="patches32", subset=192, epochs=16, batch=64, arch="cifar_resnet18",
                     noise_ref=True, noise_encoders=1)
    path, scores = runner._paths(resnet, 0)
    assert path.name == "patches32_n192_simclr_e16_cifar_resnet18_b64_s0.pt"
    assert sorted(scores) == [0, 100]
    assert sorted(runner._paths(resnet, 1)[1]) == [1]  # only the first noise_encoders get a second noise seed


def test_resnet18_cell_trains_scores_and_reloads(tmp_path: Path) -> None:
    cell = ea.Cell("tiny_resnet", dataset="tiny", epochs=1, batch=4, draws=2, arch="cifar_resnet18")
    first = tiny_runner(tmp_path, 8).encoder_run(cell, seed=0)
    assert len(first["scores"][0]) == 8 and np.isfinite(first["scores"][0]).all()
    assert first["seconds"]["pretrain"] > 0 and first["seconds"]["score"] > 0
    again = tiny_runner(tmp_path, 8, cached_only=True).encoder_run(cell, seed=0)  # loads the ResNet-18 weights
    np.testing.assert_array_equal(again["scores"][0], first["scores"][0])
    assert again["losses"] == first["losses"] and again["probe"] == first["probe"]


def test_run_cell_reports_each_pair_and_the_seconds(tmp_path: Path) -> None:
    cell = ea.Cell("tiny_cnn", dataset="tiny", epochs=1, batch=8, draws=2, widths=(4, 4, 4), noise_ref=True,
                   noise_encoders=1)
    row = tiny_runner(tmp_path, 16).run_cell(cell)
    assert row["arch"] == "small_cnn" and row["n"] == 16
    assert sorted(row["between_encoders_by_pair"]) == ["0-1", "0-2", "0-3", "1-2", "1-3", "2-3"]
    assert row["between_encoders"]["mean"] == np.mean(list(row["between_encoders_by_pair"].values()))
    assert row["same_encoder_noise_seeds"]["n"] == 1
    assert len(row["ssl_loss_by_epoch"]) == 1
    assert row["seconds_per_encoder"]["pretrain"]["n"] == 4


def test_patch_subset_is_stratified_and_fixed() -> None:
    full, labels = ea.labelled_dataset("patches32")
    part, part_labels = ea.labelled_dataset("patches32", subset=60)
    assert full.image_shape == (3, 32, 32) and len(part) == 60
    assert part.sample_ids == ea.labelled_dataset("patches32", subset=60)[0].sample_ids
    index = {s: i for i, s in enumerate(full.sample_ids)}
    np.testing.assert_array_equal(part_labels, labels[[index[s] for s in part.sample_ids]])
    assert len(np.unique(part_labels)) == len(np.unique(labels))  # every source photo kept
