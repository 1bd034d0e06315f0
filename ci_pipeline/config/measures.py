"""Measures (filled in by the measures stage)."""

from ci_pipeline.config.base import StrictModel


class MeasuresConfig(StrictModel):
    """Customer attribute, customer and business measures."""
