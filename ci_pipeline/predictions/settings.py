"""Settings of the prediction models: the model keys of the ``predictions`` configuration section.

They are defined once, in ``ci_pipeline/config/predictions.py``; :class:`PredictionSettings` adds the feature
context the model code builds from them.
"""

from __future__ import annotations

from ci_pipeline.config.predictions import (
    ChurnSettings,
    ClvSettings,
    Minimums,
    ModelSettings,
    PurchaseSource,
    RecommendationSettings,
)
from ci_pipeline.predictions.features import Context, Measures

__all__ = [
    "ChurnSettings",
    "ClvSettings",
    "Minimums",
    "PredictionSettings",
    "PurchaseSource",
    "RecommendationSettings",
]


class PredictionSettings(ModelSettings):
    """All prediction models of a project (the ``predictions`` section without the stage's own keys)."""

    def context(self, profile=None, signals=None, measures: Measures | None = None) -> Context:
        """The feature context of these settings with the given CustomerProfile, signal activities and measures."""
        return Context(
            profile,
            tuple(self.profile_fields),
            signals,
            tuple(self.signal_activities),
            measures,
            tuple(self.measure_fields),
        )
