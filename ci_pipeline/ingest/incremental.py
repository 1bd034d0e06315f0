"""The incremental CDM layout: ``FullData/`` plus ``IncrementalData/yyyy/mm/dd/hh/{Upserts,Deletes}/``.

Only closed hours are read (an hour folder is applied once its hour has ended, so a file still being written is
never half-applied). Which version of a key wins is decided after types are applied, in
:func:`ci_pipeline.ingest.quality.check_batch`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from ci_pipeline.config.sources import TableConfig
from ci_pipeline.errors import UserError
from ci_pipeline.ingest.read import OP, ORDER, Batch, combine, read_csv_file, read_parquet_file
from ci_pipeline.ingest.storage import SourceLocation


def read_incremental(location: SourceLocation, table: TableConfig, now: datetime | None = None) -> Batch:
    """Read the full data and every closed hour of changes, tagging rows with their operation and hour."""
    location.require("incremental table folder", "path")
    full = location.child("FullData")
    changes = location.child("IncrementalData")
    if not full.exists() and not changes.exists():
        raise UserError(
            f"{location.url}: neither FullData/ nor IncrementalData/ exists; point the path at the table folder "
            "of the incremental layout"
        )
    now = now or datetime.now(UTC)
    suffix = ".parquet" if table.format == "parquet" else ".csv"
    parts: list[Batch] = []
    if full.exists():
        parts += [_read(full.with_path(p), table, "upsert", 0) for p in _files(full, suffix)]
    skipped = []
    if changes.exists():
        for path in changes.glob("*/*/*/*"):
            hour = changes.with_path(path)
            relative = path[len(changes.path.rstrip("/")) + 1 :]
            try:
                start = datetime.strptime(relative, "%Y/%m/%d/%H").replace(tzinfo=UTC)
            except ValueError:
                continue
            if table.incremental.closed_hours_only and start + timedelta(hours=1) > now:
                skipped.append(relative)
                continue
            stamp = int(start.timestamp())
            for folder, op in (("Upserts", "upsert"), ("Deletes", "delete")):
                target = hour.child(folder)
                if target.exists():
                    parts += [_read(target.with_path(p), table, op, stamp) for p in _files(target, suffix)]
    names = list(table.columns) if not table.csv.header else None
    batch = combine(parts, names)
    if OP not in batch.frame.columns:
        batch.frame[OP] = pd.Series(dtype=object)
        batch.frame[ORDER] = pd.Series(dtype="int64")
    if skipped:
        batch.notes.append(f"hour folder(s) {', '.join(skipped)} not read yet: the hour has not ended")
    return batch


def _files(folder: SourceLocation, suffix: str) -> list[str]:
    return [p for p in folder.find() if p.lower().endswith(suffix) and not p.rsplit("/", 1)[-1].startswith((".", "_"))]


def _read(location: SourceLocation, table: TableConfig, op: str, stamp: int) -> Batch:
    if table.format == "parquet":
        batch = read_parquet_file(location)
    else:
        batch = read_csv_file(location, table.csv, list(table.columns) if not table.csv.header else None)
    batch.frame[OP] = op
    batch.frame[ORDER] = stamp
    return batch
