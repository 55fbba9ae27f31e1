"""Devices, sample loaders and plain encoding for the influence passes."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


#: The error for a dataset without a readable sample (fit and every pass).
NO_SAMPLES = "the dataset has no readable sample to score"


def resolve_device(name: str) -> torch.device:
    """torch.device for `name`, with a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine; use --device cpu")
    return device


def sample_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """Batches of (sample_ids, images) in dataset order; the dataset yields (sample_id, image C x H x W)."""
    if len(dataset) == 0:
        raise ValueError(NO_SAMPLES)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


@torch.no_grad()
def encode(model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
           dtype: torch.dtype = torch.float32) -> np.ndarray:
    """`model` outputs (flattened) of the dataset's readable samples, N x D float32, in dataset order; the
    model must already sit on `device` in eval mode."""
    chunks = [model(images.to(device, dtype)).flatten(1).float().cpu()
              for _, images in sample_loader(dataset, batch_size)]
    return torch.cat(chunks).numpy()
