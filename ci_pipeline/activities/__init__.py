"""The activities stage: one timeline of what every unified customer did (pandas per batch, DuckDB to order)."""

from ci_pipeline.activities.timeline import (
    CORRUPT_COLUMNS,
    FACT_COLUMNS,
    ActivitySource,
    StoredTimeline,
    Timeline,
    build_timeline,
    parse_timestamps,
    write_timeline,
)

__all__ = [
    "CORRUPT_COLUMNS",
    "FACT_COLUMNS",
    "ActivitySource",
    "StoredTimeline",
    "Timeline",
    "build_timeline",
    "parse_timestamps",
    "write_timeline",
]
