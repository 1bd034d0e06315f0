"""The activities stage: one timeline of what every unified customer did (placed per batch, ordered by key range)."""

from ci_pipeline.activities.timeline import (
    CORRUPT_COLUMNS,
    FACT_COLUMNS,
    LOOKUP_COLUMNS,
    QUARANTINE_LOOKUP_COLUMNS,
    AcceptedDates,
    ActivitySource,
    QuarantinedCustomers,
    StoredTimeline,
    Timeline,
    build_timeline,
    latest_accepted,
    parse_timestamps,
    write_timeline,
)

__all__ = [
    "CORRUPT_COLUMNS",
    "FACT_COLUMNS",
    "LOOKUP_COLUMNS",
    "QUARANTINE_LOOKUP_COLUMNS",
    "AcceptedDates",
    "ActivitySource",
    "QuarantinedCustomers",
    "StoredTimeline",
    "Timeline",
    "build_timeline",
    "latest_accepted",
    "parse_timestamps",
    "write_timeline",
]
