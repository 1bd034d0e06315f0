"""The measures stage: vectorised aggregations over the activity timeline and the profile (pandas; stored facts read
through Arrow in parts of whole customers).

Modules: ``expression`` (arithmetic tree), ``conditions`` (operator masks shared with segments), ``facts`` (the
activity facts prepared for measures and segment conditions, a stored table read in parts of whole customers),
``filters`` (filters that match none of their activities' rows), ``compute``.
"""

from ci_pipeline.measures.compute import (
    MeasureResults,
    compute_measures,
    customer_measure_table,
    distribution,
    fact_columns,
)
from ci_pipeline.measures.conditions import run_date
from ci_pipeline.measures.facts import StoredFacts

__all__ = [
    "MeasureResults",
    "StoredFacts",
    "compute_measures",
    "customer_measure_table",
    "distribution",
    "fact_columns",
    "run_date",
]
