"""Predictions: transactional churn, customer lifetime value and product recommendation on the activity timeline.

Pure pandas / numpy / scipy / scikit-learn; nothing here imports dagster. See docs/predictions.md.
"""

from ci_pipeline.predictions.churn import run_churn
from ci_pipeline.predictions.clv import run_clv
from ci_pipeline.predictions.data import (
    InsufficientData,
    lines_from_facts,
    purchases_from_facts,
    read_facts,
    signals_from_facts,
)
from ci_pipeline.predictions.published import (
    ModelRuns,
    Trained,
    fact_columns,
    model_summary,
    prediction_table,
    scoring_cutoff,
    segment_fields,
)
from ci_pipeline.predictions.recommend import run_recommendation
from ci_pipeline.predictions.settings import PredictionSettings
from ci_pipeline.predictions.stored import StoredModel

__all__ = [
    "InsufficientData",
    "ModelRuns",
    "PredictionSettings",
    "StoredModel",
    "Trained",
    "fact_columns",
    "lines_from_facts",
    "model_summary",
    "prediction_table",
    "purchases_from_facts",
    "read_facts",
    "run_churn",
    "run_clv",
    "run_recommendation",
    "scoring_cutoff",
    "segment_fields",
    "signals_from_facts",
]
