"""Schedules, sensors and notifications (filled in by the orchestration stage)."""

from ci_pipeline.config.base import StrictModel


class OrchestrationConfig(StrictModel):
    """When the pipeline runs and who hears about failures."""
