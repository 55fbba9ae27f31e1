"""ECIF: influence of image-text pairs on a contrastive (CLIP-style) dual encoder (docs/design.md section 4)."""
from influencegate.ecif.batches import FixedBatches, make_batches
from influencegate.ecif.config import EcifConfig
from influencegate.ecif.contrastive import (
    batch_loss,
    directional_parts,
    negative_exact,
    negative_part,
    positive_part,
)
from influencegate.ecif.hessian import CGSolver, ExactSolver, LowRankSolver, lanczos, make_solver
from influencegate.ecif.influence import (
    explicit_pair_influence,
    loss_gradient,
    pair_gradients,
    pair_influence,
    pair_self_influence,
    relative_influence,
    removal_edit,
    self_influence,
    similarity_jvps,
)
from influencegate.ecif.problem import ContrastiveProblem, FlatDual
from influencegate.ecif.reference import query_loss, reference_loss
from influencegate.ecif.pairs import PairSet
from influencegate.ecif.scorer import EcifScorer, score_pairs
from influencegate.ecif.table import PAIR_COLUMNS, pair_scores_table
from influencegate.ecif.train import FitResult, dense_hessian, fit_contrastive, fit_contrastive_newton, shifted_cholesky

__all__ = [
    "PAIR_COLUMNS",
    "CGSolver",
    "ContrastiveProblem",
    "EcifConfig",
    "EcifScorer",
    "ExactSolver",
    "FitResult",
    "FixedBatches",
    "FlatDual",
    "LowRankSolver",
    "PairSet",
    "batch_loss",
    "directional_parts",
    "explicit_pair_influence",
    "dense_hessian",
    "fit_contrastive",
    "fit_contrastive_newton",
    "shifted_cholesky",
    "lanczos",
    "loss_gradient",
    "make_batches",
    "make_solver",
    "negative_exact",
    "negative_part",
    "pair_gradients",
    "pair_self_influence",
    "pair_influence",
    "pair_scores_table",
    "positive_part",
    "query_loss",
    "reference_loss",
    "relative_influence",
    "removal_edit",
    "score_pairs",
    "self_influence",
    "similarity_jvps",
]
