"""The activities stage: one timeline of what every unified customer did (pure pandas)."""

from ci_pipeline.activities.timeline import CORRUPT_COLUMNS, FACT_COLUMNS, Timeline, build_timeline, parse_timestamps

__all__ = ["CORRUPT_COLUMNS", "FACT_COLUMNS", "Timeline", "build_timeline", "parse_timestamps"]
