"""Delta tables (delta-rs): remember the last version read and, when the table only grew, read just the new files."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ci_pipeline.errors import StorageError, UserError
from ci_pipeline.ingest.csvfile import END, FILE, LINE, START, STRING
from ci_pipeline.ingest.read import Batch, arrow_frame, empty_broken, stored_dates
from ci_pipeline.ingest.storage import SourceLocation


@dataclass
class DeltaRead:
    """What was read and the version to remember once the output is stored."""

    batch: Batch
    version: int


def delta_storage_options(lake, location: str) -> dict[str, str]:
    """delta-rs options for an Azure location, from the lake's credentials (empty for local tables)."""
    if "://" not in location or location.startswith("file://"):
        return {}
    options = getattr(lake, "storage_options", {}) or {}
    found: dict[str, str] = {}
    if "connection_string" in options:
        parts = dict(p.split("=", 1) for p in options["connection_string"].split(";") if "=" in p)
        found["account_name"] = parts.get("AccountName", "")
        if "AccountKey" in parts:
            found["account_key"] = parts["AccountKey"]
        if "SharedAccessSignature" in parts:
            found["sas_token"] = parts["SharedAccessSignature"]
        if "BlobEndpoint" in parts:
            # A custom endpoint (the Azurite emulator, a private link) is used as given, account path included.
            found["endpoint"] = parts["BlobEndpoint"].rstrip("/")
            found["allow_http"] = str(parts["BlobEndpoint"].startswith("http://")).lower()
    for key in ("account_name", "account_key", "sas_token"):
        if options.get(key):
            found[key] = options[key]
    return found


def _uri(location: SourceLocation) -> str:
    if "://" in location.url and not location.url.startswith("file://"):
        container_path = location.path
        return f"az://{container_path}"
    return location.path


def read_delta(location: SourceLocation, lake, remembered: dict | None, previous: pd.DataFrame | None) -> DeltaRead:
    """Read a Delta table, incrementally when possible.

    Args:
        location: the table's folder.
        lake: the lake (its credentials reach Azure tables).
        remembered: the state saved after the last run (``{"version": n, "rows": m}``) or None.
        previous: the table's last stored output, or None.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    location.require("Delta table folder", "path")
    uri = _uri(location)
    options = delta_storage_options(lake, location.url)
    try:
        table = DeltaTable(uri, storage_options=options or None)
    except TableNotFoundError:
        raise UserError(
            f"{location.url}: not a Delta table (no _delta_log folder); check the path or use format parquet"
        ) from None
    except OSError as exc:
        raise StorageError(
            f"{location.url}: cannot open the Delta table ({exc}); check the path and credentials"
        ) from exc
    version = table.version()
    notes: list[str] = []
    if remembered is not None and previous is not None and len(previous) == remembered.get("rows"):
        since = int(remembered["version"])
        if since == version:
            notes.append(f"Delta version {version} unchanged since the last run; nothing new read")
            return DeltaRead(_dated(_carried(previous, location.url, notes), table), version)
        new_files, why = _appended_files(table, uri, options, since)
        if new_files is not None:
            batch = _read_fragments(table, new_files, location.url)
            carried = _carried(previous, location.url, [])
            batch.frame = pd.concat([carried.frame, batch.frame], ignore_index=True)
            batch.notes.append(
                f"Delta versions {since + 1}..{version}: read {len(new_files)} new file(s) only, "
                f"{len(previous)} row(s) kept from version {since}"
            )
            return DeltaRead(_dated(batch, table), version)
        notes.append(f"{why}; full read of version {version}")
    if table.metadata().partition_columns or table.protocol().reader_features:
        batch = _positions(arrow_frame(table.to_pyarrow_table()), location.url)
    else:
        # In the order the files were written, as an incremental read meets them: a key repeated across versions
        # keeps its first row either way (the later ones are quarantined as duplicates).
        batch = _read_fragments(table, _written_order(table), location.url)
    batch.notes.extend(notes or [f"Delta version {version}: full read"])
    return DeltaRead(_dated(batch, table), version)


def _dated(batch: Batch, table) -> Batch:
    """``batch`` with the table's date columns declared ``date`` (every run alike: read whole, in part or carried)."""
    batch.types = {**stored_dates(pa.schema(table.schema().to_arrow())), **batch.types}
    return batch


def _appended_files(table, uri: str, options: dict, since: int) -> tuple[list[str] | None, str]:
    from deltalake import DeltaTable

    if table.metadata().partition_columns:
        return None, "partitioned Delta table"
    if table.protocol().reader_features:
        return None, f"Delta reader features {sorted(table.protocol().reader_features)} need the full reader"
    try:
        old = set(DeltaTable(uri, version=since, storage_options=options or None).file_uris())
    except Exception:  # delta-rs reports a missing log version with several exception types
        return None, f"Delta history of version {since} was vacuumed or cleaned up; cannot tell what changed"
    now = table.file_uris()
    if not old.issubset(now):
        return None, f"files were rewritten or removed since version {since} (update, delete or overwrite)"
    known = {posixpath.basename(f) for f in old}
    return [f for f in _written_order(table) if posixpath.basename(f) not in known], ""


def _written_order(table) -> list[str]:
    """The table's data files, oldest first (by the time each was written, then by name)."""
    added = pa.table(table.get_add_actions(flatten=True)).select(["path", "modification_time"]).to_pylist()
    return [a["path"] for a in sorted(added, key=lambda a: (a["modification_time"], a["path"]))]


def _read_fragments(table, files: list[str], url: str) -> Batch:
    """The rows of ``files`` (of the table's current version), file after file in the order given."""
    dataset = table.to_pyarrow_dataset()
    by_name = {posixpath.basename(fragment.path): fragment for fragment in dataset.get_fragments()}
    wanted = [by_name[name] for name in (posixpath.basename(f) for f in files) if name in by_name]
    tables = [fragment.to_table(schema=dataset.schema) for fragment in wanted]
    combined = pa.concat_tables(tables) if tables else dataset.schema.empty_table()
    frame = arrow_frame(combined)
    return _positions(frame, url)


def _positions(frame: pd.DataFrame, url: str, first_line: int = 1) -> Batch:
    frame[FILE] = pd.array([url] * len(frame), dtype=STRING)
    frame[LINE] = pd.array(np.arange(first_line, first_line + len(frame)), dtype="Int64")
    frame[START] = -1
    frame[END] = -1
    return Batch(frame=frame, broken=empty_broken(), files=[url])


def _carried(previous: pd.DataFrame, url: str, notes: list[str]) -> Batch:
    batch = _positions(previous.copy(), f"{url} (previous run)")
    batch.files = [url]
    batch.notes.extend(notes)
    return batch
