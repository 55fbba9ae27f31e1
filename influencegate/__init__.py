"""influencegate: label-free influence auditing for pretraining datasets."""
from influencegate.influence import InfluenceConfig, InfluenceScorer, exact_self_influence

__all__ = ["InfluenceConfig", "InfluenceScorer", "exact_self_influence"]
__version__ = "0.1.0"
