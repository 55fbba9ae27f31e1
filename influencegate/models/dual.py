"""A CLIP-style dual encoder over frozen image and text features, with trainable projection heads or LoRA.

Text features (e.g. MiniLM, ``influencegate.models.text``) are always precomputed: the text tower is frozen.
Image inputs are either precomputed features of a frozen image encoder (the fast path) or images run
through ``image_encoder``, which is frozen except for the LoRA adapters put on chosen Linear/Conv2d layers.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from influencegate.models.lora_conv import LoRAConv2d


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update: y = base(x) + (alpha / rank) * x A^T B^T.

    A (rank x in_features) starts Gaussian with std 1/sqrt(in_features), B (out_features x rank) at zero, so
    the wrapped layer initially computes exactly what ``base`` does. Input ... x in_features, output
    ... x out_features.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(
            torch.randn(rank, base.in_features, generator=generator, dtype=base.weight.dtype) / math.sqrt(base.in_features)
        )
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """... x in_features -> ... x out_features."""
        return self.base(x) + self.scale * (x @ self.lora_a.T) @ self.lora_b.T


def add_lora(module: nn.Module, layers: Sequence[str], rank: int = 4, alpha: float = 4.0, seed: int = 0) -> nn.Module:
    """A frozen copy of ``module`` whose named Linear and Conv2d layers are wrapped in LoRALinear /
    LoRAConv2d (the only trainable parameters). ValueError for a name that is neither."""
    module = copy.deepcopy(module).requires_grad_(False)
    adaptable = {name for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    unknown = sorted(set(layers) - adaptable)
    if unknown:
        raise ValueError(f"LoRA layers {unknown} are not Linear or Conv2d layers of the image encoder; "
                         f"those layers: {sorted(adaptable)}")
    generator = torch.Generator().manual_seed(seed)
    for name in layers:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        layer = getattr(parent, child)
        wrapper = LoRALinear if isinstance(layer, nn.Linear) else LoRAConv2d
        setattr(parent, child, wrapper(layer, rank, alpha, generator))
    return module


def _projection(in_dim: int, out_dim: int, generator: torch.Generator) -> nn.Linear:
    """Linear(in_dim, out_dim) with weights N(0, 1/out_dim) and zero bias: an input of norm about 1 gives an
    output of norm about 1, far from the singular point 0 of the normalisation after the head."""
    head = nn.Linear(in_dim, out_dim)
    with torch.no_grad():
        head.weight.copy_(torch.randn(out_dim, in_dim, generator=generator) / math.sqrt(out_dim))
        head.bias.zero_()
    return head


def _standardize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean) / std


def similarity_matrix(text_emb: torch.Tensor, image_emb: torch.Tensor, tau: float) -> torch.Tensor:
    """S = text_emb @ image_emb^T / tau: ... x B_t x embed_dim and ... x B_i x embed_dim -> ... x B_t x B_i
    (unitless logits)."""
    return text_emb @ image_emb.transpose(-1, -2) / tau


class DualEncoder(nn.Module):
    """Image and text embeddings in one space; ``similarity`` scores every text-image pair.

    image_dim: size of the frozen image features (the output of ``image_encoder`` when one is given).
    text_dim: size of the frozen text features (384 for MiniLM).
    embed_dim: size of the joint space; must equal text_dim when ``text_head`` is False.
    tau: temperature, fixed (not trained) and recorded in ``settings()``.
    Frozen features are standardised before the heads, (x - mean) / (std sqrt(dim)) per dimension (mean
    norm about 1), with statistics fixed by ``standardize_with`` (identity until then): frozen SSL and
    MiniLM features share a large common component, and centring it away keeps the heads' problem well
    conditioned; the unit scale keeps the curvature of the loss, about |x|^2 / tau^2 per pair, moderate.
    image_encoder: optional frozen module mapping images B x C x H x W -> B x image_dim; when given,
        ``forward`` takes images, else precomputed image features B x image_dim.
    text_head: True: a trainable Linear(text_dim, embed_dim); False: the text features are the text
        embeddings (with ``normalize`` False and image head only, S is linear in the trainable parameters
        and the contrastive loss is convex).
    normalize: L2-normalise both embeddings (CLIP); False keeps the heads' outputs as they are.
    lora_layers: names of Linear or Conv2d layers of ``image_encoder`` that get LoRA adapters (rank ``lora_rank``).
    train_heads: whether the projection heads are trainable (False with LoRA trains the adapters only).
    seed: initialisation of heads (weights N(0, 1/in_dim), zero bias) and adapters (the global RNG is
        not touched).
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        embed_dim: int = 32,
        tau: float = 0.1,
        image_encoder: nn.Module | None = None,
        text_head: bool = True,
        normalize: bool = True,
        lora_layers: Sequence[str] = (),
        lora_rank: int = 4,
        train_heads: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if min(image_dim, text_dim, embed_dim) < 1:
            raise ValueError(f"dimensions must be positive, got image {image_dim}, text {text_dim}, embed {embed_dim}")
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau}")
        if not text_head and embed_dim != text_dim:
            raise ValueError(f"without a text head the joint space is the text space: embed_dim must be {text_dim}")
        if lora_layers and image_encoder is None:
            raise ValueError("LoRA needs the image encoder (images as inputs), not precomputed features")
        self.tau = float(tau)
        self.normalize = bool(normalize)
        self.lora_layers = tuple(lora_layers)
        self.lora_rank = int(lora_rank)
        generator = torch.Generator().manual_seed(seed)
        self.image_head = _projection(image_dim, embed_dim, generator)
        self.text_head = _projection(text_dim, embed_dim, generator) if text_head else None
        if image_encoder is not None:
            image_encoder = (add_lora(image_encoder, lora_layers, lora_rank, seed=seed) if lora_layers
                             else copy.deepcopy(image_encoder).requires_grad_(False))
            image_encoder.eval()
        self.image_encoder = image_encoder
        for side, dim in (("image", image_dim), ("text", text_dim)):
            self.register_buffer(f"{side}_mean", torch.zeros(dim))
            self.register_buffer(f"{side}_std", torch.ones(dim))
        for head in (self.image_head, self.text_head):
            if head is not None:
                head.requires_grad_(train_heads)
        if not any(p.requires_grad for p in self.parameters()):
            raise ValueError("nothing to train: set train_heads=True or give lora_layers")

    def settings(self) -> dict[str, object]:
        """The architecture choices to record with a run (tau, normalize, sizes, trainable parameter count)."""
        return {
            "tau": self.tau,
            "normalize": self.normalize,
            "image_dim": self.image_head.in_features,
            "embed_dim": self.image_head.out_features,
            "text_head": self.text_head is not None,
            "lora_layers": list(self.lora_layers),
            "lora_rank": self.lora_rank if self.lora_layers else None,
            "trainable_parameters": sum(p.numel() for p in self.parameters() if p.requires_grad),
        }

    @torch.no_grad()
    def standardize_with(self, image_features: torch.Tensor, text_features: torch.Tensor | None = None) -> None:
        """Fix the standardisation to the mean and sqrt(dim) x std (per dimension, std floored at 1e-6 x the
        largest) of frozen features: image_features M x image_dim, text_features M' x text_dim. The text side keeps the
        identity when there is no text head (the text features are then the joint space as they are)."""
        sides = [("image", image_features)]
        if text_features is not None and self.text_head is not None:
            sides.append(("text", text_features))
        for side, x in sides:
            std = x.std(0) if len(x) > 1 else torch.ones_like(x[0])
            getattr(self, f"{side}_mean").copy_(x.mean(0))
            std = std.clamp_min(1e-6 * float(std.max().clamp_min(1e-30)))
            getattr(self, f"{side}_std").copy_(std * math.sqrt(x.shape[1]))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images B x C x H x W (with an image encoder) or features B x image_dim -> B x embed_dim."""
        features = images if self.image_encoder is None else self.image_encoder(images)
        out = self.image_head(_standardize(features, self.image_mean, self.image_std))
        return F.normalize(out, dim=-1) if self.normalize else out

    def embed_texts(self, texts: torch.Tensor) -> torch.Tensor:
        """Text features B x text_dim -> B x embed_dim."""
        out = texts if self.text_head is None else self.text_head(_standardize(texts, self.text_mean, self.text_std))
        return F.normalize(out, dim=-1) if self.normalize else out

    def forward(self, images: torch.Tensor | None = None,
                texts: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(image embeddings B_i x embed_dim, text embeddings B_t x embed_dim); None where no input is given."""
        return (None if images is None else self.embed_images(images),
                None if texts is None else self.embed_texts(texts))

    def similarity(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """S (B_t x B_i): S_ij = u_i . v_j / tau, u the text and v the image embeddings (docs/design.md section 4)."""
        v, u = self(images, texts)
        return similarity_matrix(u, v, self.tau)

    @torch.no_grad()
    def pair_cosine(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """Cosine of each pair's image and text embeddings (the CLIP score): images/texts B x ..., out (B,)."""
        return F.cosine_similarity(self.embed_images(images), self.embed_texts(texts), dim=-1)

    @torch.no_grad()
    def zero_shot(self, images: torch.Tensor, class_texts: torch.Tensor) -> torch.Tensor:
        """Predicted class of each image (B,), int64: argmax over classes of the cosine with each class's text
        embedding. class_texts: K x text_dim, or K x T x text_dim (T prompts per class, their normalised
        embeddings averaged: prompt ensembling)."""
        prompts = class_texts if class_texts.ndim == 3 else class_texts[:, None]
        k, t, d = prompts.shape
        per_prompt = F.normalize(self.embed_texts(prompts.reshape(k * t, d)), dim=-1).reshape(k, t, -1)
        classes = F.normalize(per_prompt.mean(1), dim=-1)
        return (F.normalize(self.embed_images(images), dim=-1) @ classes.T).argmax(1)
