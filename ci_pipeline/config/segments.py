"""Segments (filled in by the segments stage)."""

from ci_pipeline.config.base import StrictModel


class SegmentsConfig(StrictModel):
    """Groups of customers defined by rules."""
