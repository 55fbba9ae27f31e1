"""Great Expectations 1.x gate over a scores table and its one-row summary (fails closed)."""
from influencegate.integrations.great_expectations.gate import DEFAULT_SUITE, load_suite, run_gate, suite_hash

__all__ = ["DEFAULT_SUITE", "load_suite", "run_gate", "suite_hash"]
