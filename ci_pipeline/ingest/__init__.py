"""Ingestion: read attached sources (CSV, Parquet, CDM folders, Delta tables) where they live, apply declared
types, check primary keys, quarantine bad rows with a reason, profile each table and detect schema drift.

Plain pandas; the Dagster glue is in :mod:`ci_pipeline.defs.ingest`.
"""

from ci_pipeline.ingest.quality import QUARANTINE_COLUMNS
from ci_pipeline.ingest.table import IngestResult, ingest_table, remember

__all__ = ["QUARANTINE_COLUMNS", "IngestResult", "ingest_table", "remember"]
