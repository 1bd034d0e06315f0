"""Ingest one configured table: read it where it lives, check it, profile it and compare its schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.sources import SourceConfig, TableConfig
from ci_pipeline.ingest import state
from ci_pipeline.ingest.delta import read_delta
from ci_pipeline.ingest.incremental import read_cdm_incremental, read_incremental
from ci_pipeline.ingest.quality import check_batch, drift, profile, schema_of
from ci_pipeline.ingest.read import read_cdm, read_csv, read_parquet
from ci_pipeline.ingest.storage import SourceLocation
from ci_pipeline.lake import Lake


@dataclass
class IngestResult:
    """Everything one ingestion of a table produced, and the state to remember once its output is stored."""

    source: str
    table: str
    data: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int
    rows_merged: int
    schema: dict[str, str]
    drift: list[str]
    #: True when no earlier schema was recorded: this run's schema is the baseline for drift.
    first_schema: bool
    #: One row per column: type, null %, distinct count, top values, min and max.
    profile: list[dict]
    files: list[str]
    notes: list[str] = field(default_factory=list)
    #: Values read as missing that may be real ones (a null word written as the column's values are).
    warnings: list[str] = field(default_factory=list)
    pending_state: dict[str, dict] = field(default_factory=dict)

    @property
    def rows_accepted(self) -> int:
        return len(self.data)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def balanced(self) -> bool:
        """Rows read = rows accepted + rows quarantined (+ rows merged away by the incremental layout)."""
        return self.rows_read == self.rows_accepted + self.rows_quarantined + self.rows_merged

    @property
    def worst_severity(self) -> str | None:
        """``error`` if any quarantined row is an error, ``warning`` if any is a warning, else None."""
        if self.quarantine.empty:
            return None
        return "error" if (self.quarantine["severity"] == "error").any() else "warning"


def ingest_table(
    config: ProjectConfig,
    lake: Lake,
    source_name: str,
    table_name: str,
    previous: pd.DataFrame | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Read, type, key-check and profile one table.

    Args:
        config: the project configuration (paths are resolved against its folder).
        lake: the lake; sources are read through its filesystems and state is kept in it.
        source_name, table_name: which table.
        previous: the table's last stored output (lets a Delta table be read incrementally).
        now: the current time (the incremental layout reads only hours that ended before it).

    Raises:
        UserError: a missing file, a bad CDM document, a primary key not in the data, an empty table, ...
    """
    source: SourceConfig = config.sources[source_name]
    table: TableConfig = source.tables[table_name]
    label = f"sources.{source_name}.tables.{table_name}"
    location = SourceLocation.open(lake, config.resolve_location(table.path))
    pending: dict[str, dict] = {}
    if table.incremental is not None and table.format == "cdm":
        batch = read_cdm_incremental(location, table, table_name, now)
    elif table.incremental is not None:
        batch = read_incremental(location, table, now)
    elif table.format == "csv":
        batch = read_csv(location, table)
    elif table.format == "parquet":
        batch = read_parquet(location)
    elif table.format == "cdm":
        batch = read_cdm(location, table, table_name)
    else:
        remembered = state.load(lake, source_name, table_name, "delta")
        delta = read_delta(location, lake, remembered, previous)
        batch = delta.batch
        pending["delta"] = {"version": delta.version}
    checked = check_batch(batch, table, source_name, table_name, label)
    if "delta" in pending:
        pending["delta"]["rows"] = len(checked.accepted)
    schema = schema_of(checked.accepted)
    pending["schema"] = {"columns": schema}
    before = state.load(lake, source_name, table_name, "schema")
    return IngestResult(
        source=source_name,
        table=table_name,
        data=checked.accepted,
        quarantine=checked.quarantine,
        rows_read=checked.rows_read,
        rows_merged=checked.rows_merged,
        schema=schema,
        drift=drift(before["columns"] if before else None, schema, f"{source_name}.{table_name}"),
        first_schema=before is None,
        profile=profile(checked.accepted),
        files=batch.files,
        notes=batch.notes,
        warnings=batch.warnings + checked.warnings,
        pending_state=pending,
    )


def remember(lake: Lake, result: IngestResult) -> None:
    """Save the schema (and Delta version) of a run whose output has been stored, for the next run to compare."""
    for name, value in result.pending_state.items():
        state.save(lake, result.source, result.table, name, value)
