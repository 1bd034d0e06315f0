"""Unification settings: map, deduplicate, match, merge (filled in by the unification stage)."""

from ci_pipeline.config.base import StrictModel


class UnifyConfig(StrictModel):
    """How customer records from several tables become one profile per person."""
