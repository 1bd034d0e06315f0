"""Checks a configuration's sources before a run: every path exists and every primary key is a column.

Reads only headers, schemas and CDM documents, never the data, so it is quick enough for ``ci-pipeline validate``.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from ci_pipeline.config import ProjectConfig
from ci_pipeline.errors import UserError
from ci_pipeline.ingest import cdm
from ci_pipeline.ingest.csvfile import decode, header_names
from ci_pipeline.ingest.read import data_files
from ci_pipeline.ingest.storage import SourceLocation
from ci_pipeline.lake import Lake

_HEAD_BYTES = 1 << 16


def source_problems(config: ProjectConfig, lake: Lake | None = None) -> list[str]:
    """Every problem found, each starting with its key path (``sources.crm.tables.contacts.path: ...``).

    Args:
        config: the loaded configuration.
        lake: the lake whose filesystems reach the sources (default: the configured one).
    """
    lake = lake or Lake.from_config(config.lake, config.base_dir)
    problems = []
    for source_name, source in config.sources.items():
        for table_name, table in source.tables.items():
            label = f"sources.{source_name}.tables.{table_name}"
            try:
                columns = _columns(config, lake, table, table_name)
            except UserError as exc:
                problems.append(f"{label}.path: {exc}")
                continue
            if columns is not None and table.primary_key not in columns:
                problems.append(
                    f"{label}.primary_key: column '{table.primary_key}' is not in {table.path} (columns: "
                    f"{', '.join(columns)}); use one of them"
                )
    return problems


def _columns(config: ProjectConfig, lake: Lake, table, table_name: str) -> list[str] | None:
    location = SourceLocation.open(lake, config.resolve_location(table.path))
    if table.incremental is not None:
        location.require("incremental table folder", "path")
        return None
    if table.format == "cdm":
        return cdm.read_entity(location, table.entity or table_name).columns
    if table.format == "delta":
        location.require("Delta table folder", "path")
        if not location.child("_delta_log").exists():
            raise UserError(f"{location.url}: not a Delta table (no _delta_log folder); check the path")
        return None
    if table.format == "parquet":
        first = data_files(location, ".parquet")[0]
        with first.fs.open(first.path, "rb") as handle:
            return pq.ParquetFile(handle).schema_arrow.names
    first = data_files(location, ".csv")[0]
    if not table.csv.header:
        return list(table.columns)
    with first.fs.open(first.path, "rb") as handle:
        head = handle.read(_HEAD_BYTES)
    line = head.split(b"\n", 1)[0]
    text = decode(line.rstrip(b"\r"), table.csv.encoding, first.url).decode("utf-8")
    if not text.strip():
        raise UserError(f"{first.url}: the first line is empty; a CSV with csv.header: true starts with its header")
    return header_names(text, table.csv, first.url)
