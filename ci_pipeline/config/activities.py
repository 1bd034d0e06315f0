"""Activity tables: what customers did (filled in by the activities stage)."""

from ci_pipeline.config.base import StrictModel


class ActivitiesConfig(StrictModel):
    """The activity tables that make up the unified timeline."""
