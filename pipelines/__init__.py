"""ZenML pipelines of influencegate (they only compose steps)."""
from influencegate.pipelines.audit import dataset_audit_pipeline, run_audit
from influencegate.pipelines.config import DEFAULT_CONFIG_PATH, ConfigError, load_audit_config, preflight

__all__ = ["DEFAULT_CONFIG_PATH", "ConfigError", "dataset_audit_pipeline", "load_audit_config", "preflight", "run_audit"]
