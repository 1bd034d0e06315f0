"""The incremental CDM layout: ``FullData/`` plus ``IncrementalData/yyyy/mm/dd/hh/{Upserts,Deletes}/``.

Only closed hours are read (an hour folder is applied once its hour has ended, so a file still being written is
never half-applied). Which version of a key wins is decided after types are applied, in
:func:`ci_pipeline.ingest.quality.check_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from ci_pipeline.config.sources import CsvOptions, TableConfig
from ci_pipeline.errors import UserError
from ci_pipeline.ingest import cdm
from ci_pipeline.ingest.read import (
    CSV_SUFFIXES,
    OP,
    ORDER,
    Batch,
    combine,
    read_csv_file,
    read_parquet_file,
    user_encoding,
)
from ci_pipeline.ingest.storage import SourceLocation


@dataclass(frozen=True)
class PartLayout:
    """How the part files are written: csv or parquet, CSV options, and the columns of headerless CSV."""

    format: str
    csv: CsvOptions
    names: list[str] | None


def layout_of(table: TableConfig) -> PartLayout:
    """The part layout a csv/parquet table's own settings describe."""
    return PartLayout(table.format, table.csv, list(table.columns) if not table.csv.header else None)


def read_incremental(
    location: SourceLocation, table: TableConfig, now: datetime | None = None, layout: PartLayout | None = None
) -> Batch:
    """Read the full data and every closed hour of changes, tagging rows with their operation and hour.

    Args:
        location: the folder holding ``FullData`` and ``IncrementalData``.
        table: the table's configuration.
        now: the current time; hours that have not ended by then are left for a later run.
        layout: how the part files are written (default: from the table's settings).
    """
    layout = layout or layout_of(table)
    location.require("incremental table folder", "path")
    full = location.child("FullData")
    changes = location.child("IncrementalData")
    if not full.exists() and not changes.exists():
        raise UserError(
            f"{location.url}: neither FullData/ nor IncrementalData/ exists; point the path at the table folder "
            "of the incremental layout"
        )
    now = now or datetime.now(UTC)
    # CSV parts may be gzipped, as Spark and Azure Data Factory write them.
    suffix = (".parquet",) if layout.format == "parquet" else CSV_SUFFIXES
    parts: list[Batch] = []
    if full.exists():
        parts += [_read(full.with_path(p), layout, "upsert", 0) for p in _files(full, suffix)]
    skipped, read = [], set()
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
                    found = _files(target, suffix)
                    read.update(found)
                    parts += [_read(target.with_path(p), layout, op, stamp) for p in found]
    batch = combine(parts, layout.names)
    if changes.exists():
        batch.warnings += _outside_the_layout(changes, suffix, read, skipped)
    if OP not in batch.frame.columns:
        batch.frame[OP] = pd.Series(dtype=object)
        batch.frame[ORDER] = pd.Series(dtype="int64")
    if skipped:
        batch.notes.append(f"hour folder(s) {', '.join(skipped)} not read yet: the hour has not ended")
    return batch


def _outside_the_layout(
    changes: SourceLocation, suffix: tuple[str, ...], read: set[str], pending: list[str]
) -> list[str]:
    """A warning naming the data files under ``IncrementalData/`` that no hour folder's ``Upserts/`` or
    ``Deletes/`` holds (an ``hhmm`` folder, ``upserts`` in lower case): their rows would be missing unsaid."""
    base = changes.path.rstrip("/") + "/"
    waiting = tuple(f"{hour}/" for hour in pending)
    unread = [
        p[len(base) :] for p in _files(changes, suffix) if p not in read and not p[len(base) :].startswith(waiting)
    ]
    if not unread:
        return []
    shown = ", ".join(unread[:5]) + (f" and {len(unread) - 5} more" if len(unread) > 5 else "")
    return [
        f"{changes.url}: {len(unread)} file(s) outside the layout IncrementalData/yyyy/mm/dd/hh/Upserts|Deletes/ "
        f"were not read: {shown}; move them into an hour folder's Upserts/ or Deletes/ (names are case-sensitive)"
    ]


def _files(folder: SourceLocation, suffix: tuple[str, ...]) -> list[str]:
    return [p for p in folder.find() if p.lower().endswith(suffix) and not p.rsplit("/", 1)[-1].startswith((".", "_"))]


def _read(location: SourceLocation, layout: PartLayout, op: str, stamp: int) -> Batch:
    if layout.format == "parquet":
        batch = read_parquet_file(location)
    else:
        batch = read_csv_file(location, layout.csv, layout.names)
    batch.frame[OP] = op
    batch.frame[ORDER] = stamp
    return batch


def read_cdm_incremental(location: SourceLocation, table: TableConfig, table_name: str, now=None) -> Batch:
    """An entity of a CDM document whose rows are in the incremental layout in the entity's folder."""
    entity = cdm.read_entity(location, table.entity or table_name, partitions=False)
    first = entity.partitions[0] if entity.partitions else None
    if first is not None and first.format == "parquet":
        layout = PartLayout("parquet", table.csv, None)
    else:
        options = first.csv if first is not None else table.csv.model_copy(update={"header": False})
        if user_encoding(table):
            options = options.model_copy(update={"encoding": table.csv.encoding})
        layout = PartLayout("csv", options, entity.columns)
    folder = location.sibling(table.incremental.folder or entity.name)
    batch = read_incremental(folder, table, now, layout)
    batch.types, batch.formats = entity.types, entity.formats
    return batch
