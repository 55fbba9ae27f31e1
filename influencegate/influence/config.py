"""Configuration of the Influence-SSL scorer."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import torch

from influencegate.influence.curvature import CURVATURE_CLASSES

#: The curvature kinds: the curvature registry's names (one place, `influence.curvature.CURVATURE_CLASSES`).
CURVATURES = tuple(CURVATURE_CLASSES)
PROJECTIONS = ("random", "pca", "identity")
PRECISIONS = ("fp32", "fp64", "bf16", "fp16")
EMBEDDINGS = ("backbone",)
OBJECTIVES = ("cosine", "euclidean")
NOISES = ("common", "orthogonal", "iid")
ESTIMATORS = ("mean", "ratio")
#: Gradient rows per curvature dimension that fit_draws=None asks for (see InfluenceConfig.fit_draws).
FIT_ROWS_PER_DIM = 32
#: On a small dataset the default fit takes at most this share of its samples, and never fewer rows per
#: dimension than this share of FIT_ROWS_PER_DIM (see InfluenceConfig.curvature_samples).
SMALL_DATA_FIT_SHARE = 0.5


@dataclass
class InfluenceConfig:
    """Everything that determines an Influence-SSL score.

    perturbation: a name ("gaussian", "crop", "flip", "jitter", "blur", "grayscale", compositions joined by
        "+", e.g. "flip+jitter+grayscale") or a callable ``(images, sample_ids) -> perturbed images``.
    sigma: standard deviation of the Gaussian noise, in the model's normalised input units.
    draws: K, perturbation draws per sample (the most a score uses); the score is the mean over draws.
    target_stability: the between-seed Spearman a ranking should reach; `fit` then scores a pilot (up to 512
        samples, the first of the curvature's samples, spread over the dataset) with all K draws and keeps the
        fewest of 16, 20, 24, 28, 32, 40, 48, 64, ... (< K) and K at which 9 in 10 pairs of seeds, simulated from
        disjoint sets of the pilot's draws, reach it (``influence.stability``), so data whose ranking settles early
        is scored with fewer draws (32 x 32 photo patches: 16 of 64, Spearman 0.977 between seeds; 8 x 8 digits need
        all 64). The pilot's samples are not scored twice. None: always K draws, as under torchrun.
    fit_draws: which gradient rows fit the curvature. None (default): all K draws of a share of the samples, spread
        evenly over the dataset: enough samples for FIT_ROWS_PER_DIM = 32 rows per curvature dimension, n_fit x K >=
        32 D (D = the largest layer's r_out r_in; 512 samples at D = 1,024, K = 64), and at least the draws pilot's
        PILOT_SAMPLES, which are the first of them, so the pilot reuses the curvature pass's rows and computes no
        draw twice. On a small dataset at most half of its samples, down to 16 rows per dimension
        (SMALL_DATA_FIT_SHARE: 300 of 600 digits), so that the fit does not cost a whole pass. H is a dataset
        average, and beyond that many rows its ranking barely moves, while each score needs all K. All K draws of
        fewer samples, rather than the first draws of every sample, keep the ranking's stability between seeds:
        under common noise every sample shares draw k, so a curvature from a few draws carries their noise into
        every score (digits, SmallCNN: 0.938 / 0.942 between seeds against 0.876 / 0.912 for the first 19 draws of
        all 1,797 digits, at 0.47 of the cost of a fit on all N x K rows with the exact inverse; README, "Defaults
        and why"). An integer: the first fit_draws draws of EVERY sample (do so when fitting shards that are merged
        later).
    noise: how the K Gaussian draws are made; each single draw follows N(0, I) in all three.
        "common": common random numbers, draw k is the same noise for every sample (and the K draws are
        mutually orthogonal): the estimation errors of different samples are correlated, so rankings are
        more stable across seeds (digits, raw r = 32: Spearman between seeds 0.58 (iid) -> 0.76 at K = 8,
        0.98 at K = 64; see the README's stability table).
        "orthogonal": per-sample draws, mutually orthogonal (quasi-random). "iid": plain independent draws.
    estimator: "mean" (the mean of the scored draws' s_k) or "ratio" (opt-in, session 24: that mean times
        mean_{k<K} d_k / mean over the scored draws of d_k, the objective of all K draws, forward only;
        ``influence.control``). Both estimate E[s]; "ratio" is the mean itself when every draw is scored, and
        with `target_stability` the pilot then chooses fewer scored draws where the objective explains their
        luck. Needs a named perturbation (its control draws for the pilot come from other seeds).
    objective: "cosine", d = 1 - cos(phi(x), phi(x_hat)) (the paper's Eq. 6), or "euclidean",
        d = |phi(x) - phi(x_hat)|^2 (the setting of the paper's Theorem 1).
    rank: r, projected size per side of each layer (capped by the layer's own sizes).
    projection: "random" (seeded Gaussian / sqrt(r)), "pca" (top eigenvectors of the activation and
        output-gradient covariances, one extra pass) or "identity" (no projection; small models).
    curvature: "identity" | "diagonal" | "raw" | "kfac" | "ekfac".
    inverse_rank: raw only: None = the exact damped inverse of the projected covariance; m = its top-m
        eigenpairs exactly and one weight, sum e/(e + lambda) / sum e over the other eigenvalues e, for the
        rest (see RawCurvature). Default 256: 4x less scoring work than the exact inverse on D = 1,024
        layers; against the exact score (600 digits) it keeps 0.933 / 0.928 on two encoders where m = 128
        keeps 0.916 / 0.903 (README, "Defaults and why").
    damping: None = per layer 0.1 x the mean eigenvalue of that layer's curvature; a float = absolute
        lambda added to H = (1/N) sum_n g_n g_n^T.
    embedding: which representation the objective compares ("backbone": the encoder's output).
    draws_per_pass: draws stacked into one forward/backward, 2 x draws_per_pass x batch_size rows. None:
        sized from the encoder's activations per image and the free memory (``influence.pass_memory``: at
        most 4096 rows, half the free GPU memory, a quarter of the available RAM), splitting a batch into
        smaller steps when one draw of it does not fit. Results do not depend on it.
    seed: seeds the perturbations (per sample id and draw). projection_seed: seeds the random projections,
        kept apart so that the perturbation seed alone can be varied (stability checks).
    precision: "fp32" | "fp64" | "bf16"/"fp16" (autocast for the forward passes: bf16 on CUDA and CPU, fp16 on
        CUDA; projections, sums and curvature stay in fp32).
    """

    perturbation: str | Callable[..., torch.Tensor] = "gaussian"
    sigma: float = 0.2
    draws: int = 64
    target_stability: float | None = 0.95
    fit_draws: int | None = None
    estimator: str = "mean"
    noise: str = "common"
    rank: int = 32
    projection: str = "random"
    curvature: str = "raw"
    inverse_rank: int | None = 256
    damping: float | None = None
    embedding: str = "backbone"
    objective: str = "cosine"
    batch_size: int = 256
    draws_per_pass: int | None = None
    device: str = "cpu"
    precision: str = "fp32"
    seed: int = 0
    projection_seed: int = 0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.curvature not in CURVATURES:
            problems.append(f"curvature must be one of {CURVATURES}, got {self.curvature!r}")
        if self.projection not in PROJECTIONS:
            problems.append(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.embedding not in EMBEDDINGS:
            problems.append(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.estimator not in ESTIMATORS:
            problems.append(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        elif self.estimator == "ratio" and callable(self.perturbation):
            problems.append("estimator 'ratio' needs a named perturbation (a callable cannot draw the pilot's "
                            "control frames from other seeds)")
        if self.noise not in NOISES:
            problems.append(f"noise must be one of {NOISES}, got {self.noise!r}")
        if int(self.draws) < 1:
            problems.append(f"draws must be >= 1, got {self.draws}")
        if self.target_stability is not None and not (0 < self.target_stability < 1):
            problems.append(f"target_stability must be None or between 0 and 1, got {self.target_stability}")
        if self.fit_draws is not None and int(self.fit_draws) < 1:
            problems.append(f"fit_draws must be None or >= 1, got {self.fit_draws}")
        if self.inverse_rank is not None and int(self.inverse_rank) < 1:
            problems.append(f"inverse_rank must be None or >= 1, got {self.inverse_rank}")
        if int(self.rank) < 1:
            problems.append(f"rank must be >= 1, got {self.rank}")
        if int(self.batch_size) < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):  # nan and inf pass a plain comparison
            problems.append(f"sigma must be finite and > 0, got {self.sigma}")
        if self.damping is not None and not (math.isfinite(self.damping) and self.damping > 0):
            problems.append(f"damping must be None (relative damping) or finite and > 0, got {self.damping}: 0 leaves "
                            "a singular curvature uninvertible, inf sets every influence to 0")
        if problems:
            raise ValueError("invalid InfluenceConfig: " + "; ".join(problems))

    def curvature_draws(self) -> int:
        """The number of draws (the first ones) of each fitted sample that fit the curvature (see `fit_draws`)."""
        return int(self.draws) if self.fit_draws is None else max(1, min(int(self.fit_draws), int(self.draws)))

    def curvature_samples(self, samples: int, dimension: int, pilot: int = 0) -> int:
        """How many of `samples` samples fit the curvature, for a largest curvature dimension `dimension` and a
        draws pilot of `pilot` samples (0: none): all of them under an integer fit_draws (see `fit_draws`).
        Default: max(ceil(32 D / K), pilot), but at most half of a small dataset's samples, and never fewer than
        ceil(16 D / K) (16 rows per dimension): 512 of 1,797 digits, 300 of 600, 256 of 300, all of 200
        (D = 1,024, K = 64)."""
        if self.fit_draws is not None:
            return int(samples)
        needed = math.ceil(FIT_ROWS_PER_DIM * dimension / int(self.draws))
        floor = math.ceil(SMALL_DATA_FIT_SHARE * needed)
        small_data_cap = max(floor, math.ceil(SMALL_DATA_FIT_SHARE * int(samples)))
        return max(1, min(int(samples), max(needed, int(pilot)), small_data_cap))

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model and the statistics (fp64 only when asked for)."""
        return torch.float64 if self.precision == "fp64" else torch.float32

    def to_params(self) -> dict[str, Any]:
        """Flat, loggable view (strings and numbers), e.g. for MLflow params."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update({f"extra.{k}": v for k, v in value.items()})
            elif callable(value):
                out[f.name] = getattr(value, "__name__", type(value).__name__)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "InfluenceConfig":
        """Build from a (YAML) mapping; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown scorer option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
