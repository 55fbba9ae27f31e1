"""ZenML-specific pieces: approvals as tagged artifacts and the look-ups built on them."""
from influencegate.integrations.zenml.approvals import (BASE_TAG, DECISION_ARTIFACT, SCORES_ARTIFACT, approval_tags,
                                                        last_approved, list_versions, tag_current_output)

__all__ = ["BASE_TAG", "DECISION_ARTIFACT", "SCORES_ARTIFACT", "approval_tags", "last_approved", "list_versions",
           "tag_current_output"]
