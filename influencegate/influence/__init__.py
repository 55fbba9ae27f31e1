"""Influence-SSL: label-free self-influence of training images on an encoder."""
from influencegate.influence.config import InfluenceConfig
from influencegate.influence.exact import ExactGradients, exact_self_influence, per_sample_gradients, spearman
from influencegate.influence.resume import score_resumable
from influencegate.influence.scorer import InfluenceScorer

__all__ = ["ExactGradients", "InfluenceConfig", "InfluenceScorer", "exact_self_influence", "per_sample_gradients", "score_resumable",
           "spearman"]
