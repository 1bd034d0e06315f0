"""Lake exports: CDM folders (model.json + CSV, or a manifest + Parquet) and SQL views over them with DuckDB."""

from ci_pipeline.export.cdm import ExportResult, StoredTable, read_export, write_export, write_table
from ci_pipeline.export.sql import connect, query

__all__ = ["ExportResult", "StoredTable", "connect", "query", "read_export", "write_export", "write_table"]
