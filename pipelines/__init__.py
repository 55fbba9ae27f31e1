"""ZenML pipelines of influencegate (they only compose steps)."""
from influencegate.pipelines.align import load_align_config, pair_alignment_pipeline, run_alignment
from influencegate.pipelines.audit import dataset_audit_pipeline, run_audit
from influencegate.pipelines.config import DEFAULT_CONFIG_PATH, ConfigError, load_audit_config, preflight

__all__ = ["DEFAULT_CONFIG_PATH", "ConfigError", "dataset_audit_pipeline", "load_align_config", "load_audit_config",
           "pair_alignment_pipeline", "preflight", "run_alignment", "run_audit"]
