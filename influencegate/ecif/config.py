"""EcifConfig: every setting of the ECIF scorer, recorded with each run."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class EcifConfig:
    """Settings of ``EcifScorer``. Defaults: what benchmarks/ecif_quality.py chose on its development seed.

    Dual encoder (``influencegate.models.dual.DualEncoder``):
        text_head: train a text projection head too (default False: only the image head is trained and the
            frozen text features are the joint space, so embed_dim is the text size). normalize:
            L2-normalise both embeddings. The default (image head, no normalisation) makes S linear in the
            parameters and R strictly convex: one optimum, which influence functions assume, and on the
            digits benchmark both better ECIF scores and a faster, reliable fit than the CLIP-style
            normalised two-head option (non-convex; needs a larger delta to train to a tight optimum).
        embed_dim: joint embedding size with a text head. tau: temperature (fixed, not trained).
        lora_layers: Linear layers of the image encoder that get LoRA adapters (then the encoder runs on
            the images at every step); lora_rank: their rank. train_heads: train the projection heads.
    Training (fixed batches, full-batch L-BFGS then Newton steps to a tight optimum):
        batch_size: pairs per fixed batch. delta: L2 coefficient of R = sum_b L_b + (delta/2)|theta - theta_0|^2
            (theta_0: the seeded initialisation; the data term is a sum over pairs, so delta compares
            with the number of pairs). max_iter: L-BFGS iteration cap. tol: gradient-norm target |grad R|_2.
    Inverse Hessian:
        damping: added to the Hessian of R (which already holds delta I). exact_max_params: exact solve up
        to this many trainable parameters; beyond, conjugate gradients (cg_tol relative residual,
        cg_max_iter) for one right-hand side (reference, trace-back, removal), and for self-influence (one
        right-hand side per pair) the low-rank approximation with the top lowrank_rank Lanczos eigenpairs.
    Scores (is_misaligned):
        flag_share: with a clean reference set, a pair is_misaligned when its combined misalignment score
            (``influencegate.ecif.combined``: ECIF, the CLIP score and the reference caption loss, each as a
            robust z against the reference pairs) or its group score (``influencegate.ecif.groups``: its
            group's caption loss against clean pairs with that kind of caption) passes the conformal test at
            level flag_share / 2 against the reference pairs (scored out of sample, by cross-fitting).
        flag_z: without a reference set (no calibration data), a pair is_misaligned when the robust z-score of
            its misalignment_score (self-influence) exceeds this.
        reference_batch_size: batch size of the reference loss (None: batch_size).
    Frozen encoders:
        pretrain_epochs: SimCLR epochs of the default SmallCNN image encoder (used when images come without
        an encoder). feature_batch_size: batch size of the frozen image/text feature passes.
        device: where the frozen encoders run; the ECIF algebra always runs on the CPU in float64.
    seed: batches, heads, adapters and the default encoder. progress: tqdm bars on the long loops.
    """

    embed_dim: int = 32
    tau: float = 0.1
    text_head: bool = False
    normalize: bool = False
    lora_layers: tuple[str, ...] = ()
    lora_rank: int = 4
    train_heads: bool = True
    batch_size: int = 64
    delta: float = 300.0
    max_iter: int = 2000
    tol: float = 1e-8
    damping: float = 0.0
    exact_max_params: int = 2000
    cg_tol: float = 1e-10
    cg_max_iter: int = 2000
    lowrank_rank: int = 300
    flag_share: float = 0.02
    flag_z: float = 3.5
    reference_batch_size: int | None = None
    pretrain_epochs: int = 20
    feature_batch_size: int = 256
    device: str = "cpu"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        self.lora_layers = tuple(self.lora_layers)
        positive = {"embed_dim": self.embed_dim, "tau": self.tau, "lora_rank": self.lora_rank,
                    "max_iter": self.max_iter, "tol": self.tol, "cg_tol": self.cg_tol, "cg_max_iter": self.cg_max_iter,
                    "lowrank_rank": self.lowrank_rank, "feature_batch_size": self.feature_batch_size}
        bad = [f"{k}={v}" for k, v in positive.items() if not v > 0]
        if bad:
            raise ValueError(f"these settings must be positive: {', '.join(bad)}")
        if self.batch_size < 2 or (self.reference_batch_size is not None and self.reference_batch_size < 2):
            raise ValueError("batch sizes must be at least 2 (a contrastive batch needs negatives)")
        if not 0.0 <= self.flag_share < 1.0:
            raise ValueError(f"flag_share must be in [0, 1), got {self.flag_share}")
        if self.delta < 0 or self.damping < 0 or self.pretrain_epochs < 0 or self.exact_max_params < 0:
            raise ValueError("delta, damping, pretrain_epochs and exact_max_params must be >= 0")
        if self.delta + self.damping <= 0:
            raise ValueError("delta + damping must be positive: the inverse Hessian needs a floor")

    def to_params(self) -> dict[str, Any]:
        """Flat dict of primitives for logging (lists for tuples)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EcifConfig:
        """Build from a dict (e.g. a YAML section); ValueError naming unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ECIF settings {unknown}; known: {sorted(known)}")
        return cls(**values)
