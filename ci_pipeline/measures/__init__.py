"""The measures stage: vectorised aggregations over the activity timeline and the profile (pure pandas).

Modules: ``expression`` (arithmetic tree), ``conditions`` (operator masks shared with segments), ``compute``.
"""

from ci_pipeline.measures.compute import (
    MeasureResults,
    compute_measures,
    customer_measure_table,
    distribution,
    fact_columns,
)
from ci_pipeline.measures.conditions import run_date

__all__ = [
    "MeasureResults",
    "compute_measures",
    "customer_measure_table",
    "distribution",
    "fact_columns",
    "run_date",
]
