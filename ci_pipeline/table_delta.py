"""A stored output table's version, and what changed in it since the version before.

A stage that rewrites a large table after changing a few of its rows (the activities after an append) knows which
rows those are. It stamps the table's Parquet file with a version, and keeps a delta in the lake: the rows it placed
(in the table's columns and key order) and the keys of the rows that left, from the version ``base`` to
``version``. A reader that holds ``base`` (the sink) applies the delta instead of comparing every row; any other
reader ignores it. The delta's meta file is removed before the table is rewritten and written after it, so a run
stopped in between leaves no delta, and one that does not match the table's version is never used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ci_pipeline.lake import Lake

#: The Parquet key-value metadata key holding a table's version.
VERSION_KEY = b"ci_pipeline.version"
#: Changes whenever what a delta holds, or what it means, changes: an older delta is not used.
DELTA_FORMAT = 1


@dataclass(frozen=True)
class Delta:
    """The changes from the table version ``base`` to ``version``."""

    base: str
    version: str
    #: The rows placed since ``base`` (new, changed or the same again), in the table's columns and key order.
    rows: ds.Dataset
    #: The keys of the rows of ``base`` that left the table (a key placed again may be among them).
    removed: pa.Array


#: Where deltas are kept in the lake, beside the stages' other state (one folder per table).
DELTA_DIR = "ci_pipeline/_state/delta"


def folder(relative: str) -> str:
    """Where the delta of the table stored at ``relative`` (``ci_pipeline/<stage>/<table>.parquet``) is kept."""
    return f"{DELTA_DIR}/{relative.removeprefix('ci_pipeline/').removesuffix('.parquet')}"


def rows_path(relative: str) -> str:
    return f"{folder(relative)}/rows.parquet"


def _removed_path(relative: str) -> str:
    return f"{folder(relative)}/removed.parquet"


def _meta_path(relative: str) -> str:
    return f"{folder(relative)}/meta.json"


def stamped(schema: pa.Schema, version: str | None) -> pa.Schema:
    """``schema`` with its metadata naming ``version`` (none: no version)."""
    metadata = {k: v for k, v in (schema.metadata or {}).items() if k != VERSION_KEY}
    if version is not None:
        metadata[VERSION_KEY] = version.encode()
    return schema.with_metadata(metadata)


def version_of(data: ds.Dataset) -> str | None:
    """The version a stored table (one Parquet file) is stamped with, or None."""
    if len(data.files) != 1:
        return None
    found = pq.read_schema(data.files[0], filesystem=data.filesystem).metadata or {}
    stamp = found.get(VERSION_KEY)
    return stamp.decode() if stamp else None


def forget(lake: Lake, relative: str) -> None:
    """Remove the delta (its meta file first): from now on the table may change in ways no delta describes."""
    lake.delete(_meta_path(relative))
    lake.delete(folder(relative), recursive=True)


def write(lake: Lake, relative: str, base: str, version: str, removed: pa.Array) -> None:
    """Store a delta whose rows are already at :func:`rows_path` (written beside the table): the removed keys, then
    the meta file."""
    with lake.writing(_removed_path(relative)) as local:
        pq.write_table(pa.table({"key": removed.cast(pa.string())}), local, compression="zstd")
    meta = {"format": DELTA_FORMAT, "base": base, "version": version}
    lake.write_bytes(_meta_path(relative), json.dumps(meta, sort_keys=True).encode())


def read(lake: Lake, relative: str) -> Delta | None:
    """The delta stored beside the table at ``relative``, or None when there is none to use."""
    if not lake.exists(_meta_path(relative)):
        return None
    try:
        meta = json.loads(lake.read_bytes(_meta_path(relative)))
        if meta.get("format") != DELTA_FORMAT:
            return None
        removed = lake.dataset(_removed_path(relative)).to_table().column("key").combine_chunks()
        return Delta(meta["base"], meta["version"], lake.dataset(rows_path(relative)), removed)
    except Exception:  # any damage means comparing every row, never a wrong delta
        return None
