"""Load an encoder checkpoint, or pretrain one self-supervised on the dataset."""
from __future__ import annotations

from typing import Annotated, Optional, Tuple

from torch import nn
from zenml import step

from influencegate.workflows.image_audit import load_or_pretrain
from influencegate.workflows.references import DatasetRef


@step
def load_or_pretrain_encoder(dataset: DatasetRef, checkpoint: Optional[str] = None, method: Optional[str] = "simclr",
                             epochs: int = 20, seed: int = 0, architecture: str = "small_cnn",
                             save_to: Optional[str] = None) -> Tuple[Annotated[nn.Module, "encoder"], Annotated[dict, "encoder_info"]]:
    """The encoder to score with: `checkpoint` (a path or "torchvision:<name>") when given, else
    `architecture` pretrained with `method` (simclr | byol | barlow_twins) for `epochs` on `dataset`.

    encoder_info: checkpoint, method, epochs, seed, architecture, pretrain_seconds, final_loss.
    """
    data = dataset.open() if not checkpoint else None
    encoder, losses, seconds = load_or_pretrain(data, checkpoint, method, epochs, seed, architecture, save_to, progress=False)
    info = {"checkpoint": checkpoint, "method": None if checkpoint else method, "epochs": 0 if checkpoint else int(epochs),
            "seed": int(seed), "architecture": architecture, "pretrain_seconds": round(seconds, 3),
            "final_loss": losses[-1] if losses else None, "saved_to": save_to}
    return encoder, info
