"""ZenML pipelines of influencegate (they only compose steps), their run configs and the input checks."""
from influencegate.pipelines.audit import dataset_audit_pipeline, run_audit
from influencegate.pipelines.config import DEFAULT_CONFIG_PATHS, ConfigError, load_config
from influencegate.pipelines.pairs import pair_audit_pipeline, run_pair_audit
from influencegate.pipelines.preflight import preflight

__all__ = ["DEFAULT_CONFIG_PATHS", "ConfigError", "dataset_audit_pipeline", "load_config", "pair_audit_pipeline",
           "preflight", "run_audit", "run_pair_audit"]
