"""Write output tables to the lake as a Common Data Model folder, one snapshot per run.

Layout (the reference product's): ``<folder>/<Export>/<Table>/<yyyy>/<mm>/<dd>/<HHMM>/<Table>_<n>.csv`` plus
``<folder>/<Export>/model.json``; with Parquet, ``<Table>_<n>.parquet`` plus ``default.manifest.cdm.json`` and one
``<Table>.cdm.json`` per table. Data files are written before the metadata, so a reader never sees metadata that
points at missing files; older snapshots are deleted only after the new metadata is in place.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ci_pipeline import outputs
from ci_pipeline.arrays import holds_dates
from ci_pipeline.dataverse.naming import column_text, utc_seconds_text
from ci_pipeline.dataverse.prepare import sorted_by_key, stated_filled
from ci_pipeline.errors import StorageError, UserError
from ci_pipeline.lake import Lake
from ci_pipeline.orchestration.files import FileState
from ci_pipeline.side_by_side import mapped_ahead

MODEL_JSON = "model.json"
MANIFEST = "default.manifest.cdm.json"
CSV_SETTINGS = {
    "$type": "CsvFormatSettings",
    "columnHeaders": False,
    "delimiter": ",",
    "quoteStyle": "QuoteStyle.Csv",
    "csvStyle": "CsvStyle.QuoteAlways",
    "encoding": "UTF-8",
}
#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection: = + - @ tab CR; also
#: line feed and NUL, which some spreadsheets skip before looking at the next character).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")
#: A signed number or phone number (``+1 (530) 991-1656``, ``-5.25``) calls no function and reaches no other
#: program, so it keeps its value: a quote before every E.164 phone number would corrupt what BI tools read.
PLAIN_NUMBER = r"^[+-]?[0-9][0-9 ().-]*$"
#: Columns holding GUIDs (typed ``guid`` in the metadata).
GUID_COLUMNS = {
    "AlternateKeyId",
    "msdynci_unifiedactivityid",
    "msdynci_customermeasureid",
    "msdynci_enrichmentid",
    "msdynci_predictionid",
    "msdynci_segmentmembershipid",
}


@dataclass
class ExportResult:
    """What one export run wrote."""

    name: str
    root: str
    snapshot: str
    tables: dict[str, dict] = field(default_factory=dict)
    removed_snapshots: list[str] = field(default_factory=list)
    metadata_file: str = ""
    #: Text cells written with a leading ``'`` so spreadsheets do not run them as formulas.
    escaped_cells: int = 0
    #: Tables whose data files :func:`write_table` wrote earlier in the run, taken as they were.
    taken: list[str] = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            "export": self.name,
            "root": self.root,
            "snapshot": self.snapshot,
            "rows": sum(t["rows"] for t in self.tables.values()),
            "bytes": sum(t["bytes"] for t in self.tables.values()),
            "files": sum(t["parts"] for t in self.tables.values()),
            "removed_snapshots": len(self.removed_snapshots),
            "escaped_cells": self.escaped_cells,
            "tables_written_earlier": len(self.taken),
        }


def cdm_type(column: str, dtype) -> str:
    """The CDM data type of a column."""
    if column in GUID_COLUMNS:
        return "guid"
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_date(dtype.pyarrow_dtype):
        return "date"
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return "dateTime"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "int64"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    return "string"


def public_url(lake: Lake, relative: str) -> str:
    """The absolute location of a lake path as other tools read it: on a local lake the plain absolute path (what
    the CDM SDK's local adapter resolves, where a ``file://`` URL is understood by no adapter and a relative
    location only against the reader's working folder), on Azure the storage account's https URL."""
    if lake.protocol == "file":
        return lake.path(relative)
    client = getattr(lake.fs, "service_client", None)
    if client is None:
        return lake.url(relative)
    return account_url(client.url) + "/" + lake.path(relative)


def account_url(client_url: str) -> str:
    """The storage account's URL as a reader of an export's manifest uses it: the dfs endpoint (what Customer
    Insights writes and the CDM SDK's ADLS adapter understands), without the query and fragment. A client made from
    a SAS token carries the token in its URL's query: in a manifest every reader of the export could use it."""
    parts = urlsplit(client_url)
    plain = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return plain.replace(".blob.core.windows.net", ".dfs.core.windows.net")


def escape_formula_cells(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``df`` with a ``'`` before every text cell a spreadsheet would read as a formula, and how many there were.

    Only text columns are touched: ``-5`` in a numeric column is a number, not a formula. Every cell is also
    quoted and its double quotes doubled when written (OWASP's other two rules), so a value cannot open a new cell.
    """
    out = df.copy()
    escaped = 0
    for column in out.columns:
        values = out[column]
        if not _holds_text(values):
            continue
        # .str gives NaN for a cell that is not text (a number in a mixed column), which is left as it is
        plain = values.str.fullmatch(PLAIN_NUMBER).fillna(False).to_numpy(bool)
        risky = values.str[:1].isin(FORMULA_START).fillna(False).to_numpy(bool) & ~plain
        if risky.any():
            out[column] = values.where(~risky, "'" + values.where(risky, ""))
            escaped += int(risky.sum())
    return out, escaped


def _holds_text(values: pd.Series) -> bool:
    if pd.api.types.is_string_dtype(values):
        return True
    if values.dtype != object:
        return False
    return pd.api.types.infer_dtype(values, skipna=True) in ("string", "mixed", "mixed-integer")


def _csv_bytes(df: pd.DataFrame) -> bytes:
    """One CSV part: no header, every field quoted (an empty or missing value as ``""``), ``\\n`` line ends.

    Written by Arrow's CSV writer from text columns: the text of a value is pandas' (``1.0``, ``True``), as the
    pandas writer this replaced produced, byte for byte, at a twentieth of its time.
    """
    columns = {}
    for n, column in enumerate(df.columns):
        values = df.iloc[:, n]
        dtype = values.dtype
        if holds_dates(values):
            pass  # a date's text is ISO 8601's YYYY-MM-DD, as pandas writes it
        elif isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
            values = pd.to_datetime(values, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        text = pa.array(values.astype("string"), type=pa.string(), from_pandas=True)
        # Arrow leaves a null unquoted; the CDM files quote every field, the empty one too.
        columns[f"{n}:{column}"] = pc.fill_null(text, "")
    return _write_csv(pa.table(columns)).to_pybytes()


def _write_csv(text: pa.Table) -> pa.Buffer:
    """The CSV text in Arrow's own buffer: written to a file from there, never copied into Python bytes."""
    buffer = pa.BufferOutputStream()
    options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
    pa_csv.write_csv(text, buffer, options)
    return buffer.getvalue()


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buffer, compression="zstd")
    return buffer.getvalue()


def _snapshot(timestamp: datetime) -> str:
    if timestamp.tzinfo is None:
        raise ValueError("export timestamp must be timezone-aware")
    stamp = timestamp.astimezone(UTC)
    return f"{stamp:%Y}/{stamp:%m}/{stamp:%d}/{stamp:%H%M}"


def write_export(
    lake: Lake,
    name: str,
    tables: dict[str, pd.DataFrame | StoredTable],
    timestamp: datetime,
    folder: str = "exports",
    fmt: str = "csv",
    rows_per_part: int = 1_000_000,
    retention: int = 3,
    escape_formulas: bool = True,
) -> ExportResult:
    """Write one snapshot of ``tables`` as a CDM folder, then drop snapshots beyond ``retention``.

    A stored table whose data files :func:`write_table` already wrote into this snapshot, from the same file with
    the same settings, is taken as it is; every other table is written here.

    Args:
        lake: the data lake.
        name: export name (the folder under ``folder``).
        tables: output table name -> shaped frame (spec column names), or a :class:`StoredTable` (read in batches
            where it can be).
        timestamp: the run's start (names the snapshot folder; never the wall clock, so reruns are idempotent).
        folder: lake folder holding the exports.
        fmt: ``csv`` (model.json) or ``parquet`` (manifest).
        rows_per_part: rows per data file.
        retention: snapshots kept per table.
        escape_formulas: CSV only: escape text cells a spreadsheet would run as formulas (see
            :func:`escape_formula_cells`).
    """
    root, snapshot = posixpath.join(folder, name), _snapshot(timestamp)
    settings = _settings(fmt, rows_per_part, escape_formulas)
    result = ExportResult(name=name, root=lake.url(root), snapshot=snapshot)
    written: dict[str, list[str]] = {}
    entities = []
    for table, source in tables.items():
        record = _written_earlier(lake, root, snapshot, table, source, settings)
        if record is None:
            record = _write_table(lake, root, snapshot, table, source, settings)
        else:
            result.taken.append(table)
        result.escaped_cells += record["escaped"]
        written[table] = record["files"]
        result.tables[table] = {"rows": record["rows"], "parts": len(record["files"]), "bytes": record["bytes"]}
        entities.append((table, record["attributes"], record["files"]))
    modified = timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if fmt == "csv":
        result.metadata_file = _write_model_json(lake, root, name, modified, entities)
    else:
        result.metadata_file = _write_manifest(lake, root, modified, entities)
    result.removed_snapshots = _clean_up(lake, root, written, retention)
    return result


def write_table(
    lake: Lake,
    name: str,
    table: str,
    source: StoredTable,
    timestamp: datetime,
    folder: str = "exports",
    fmt: str = "csv",
    rows_per_part: int = 1_000_000,
    escape_formulas: bool = True,
) -> dict:
    """Write one stored table's data files into the snapshot of ``timestamp`` ahead of :func:`write_export`, as
    soon as the stage that makes the table is done, so the export's last step does not write it then. Nothing
    points at the files until :func:`write_export` writes the metadata.

    Returns:
        The table's record (:data:`TABLE_RECORD`): rows, bytes, escaped cells, attributes and files.
    """
    root, snapshot = posixpath.join(folder, name), _snapshot(timestamp)
    # An earlier record of this snapshot (a rerun within the minute) no longer describes the files being replaced.
    lake.delete(posixpath.join(root, table, snapshot, TABLE_RECORD))
    settings = _settings(fmt, rows_per_part, escape_formulas)
    record = _write_table(lake, root, snapshot, table, source, settings)
    # Written last: a record means every file it names is in place.
    record_file = {**record, "source": source.state(), "settings": settings}
    lake.write_bytes(posixpath.join(root, table, snapshot, TABLE_RECORD), _json(record_file))
    return record


#: A hidden file beside one table's data files of a snapshot (written by :func:`write_table`): what they hold, from
#: which stored file and with which settings. Readers of the CDM folder follow its metadata and never see it.
TABLE_RECORD = ".table.json"


def _settings(fmt: str, rows_per_part: int, escape_formulas: bool) -> dict:
    return {"format": fmt, "rows_per_part": rows_per_part, "escape_formulas": escape_formulas and fmt == "csv"}


def _write_table(
    lake: Lake, root: str, snapshot: str, table: str, source: pd.DataFrame | StoredTable, settings: dict
) -> dict:
    """Write one table's data files into ``snapshot``; its record (see :data:`TABLE_RECORD`)."""
    fmt = settings["format"]
    attributes, chunks = _encoded_parts(table, source, fmt, settings["rows_per_part"], settings["escape_formulas"])
    extension = "csv" if fmt == "csv" else "parquet"
    files, size, rows, escaped = _write_parts(lake, root, f"{table}/{snapshot}/{table}", extension, chunks)
    return {"rows": rows, "bytes": size, "escaped": escaped, "attributes": attributes, "files": files}


def _written_earlier(
    lake: Lake, root: str, snapshot: str, table: str, source: pd.DataFrame | StoredTable, settings: dict
) -> dict | None:
    """The record of ``table``'s data files in ``snapshot`` when :func:`write_table` wrote them from the stored
    file as it is now, with these settings, and they are all still there; else None."""
    path = posixpath.join(root, table, snapshot, TABLE_RECORD)
    if not isinstance(source, StoredTable) or not lake.exists(path):
        return None
    record = json.loads(lake.read_bytes(path))
    if record.get("source") != source.state() or record.get("settings") != settings:
        return None
    if not all(lake.exists(posixpath.join(root, f)) for f in record["files"]):
        return None
    return record


#: A piece of one data file: the part's number (from 1, increasing), its bytes, its rows and the cells escaped in
#: it. A part is written as the chunks of its number come, so no part is held whole.
Chunk = tuple[int, bytes | pa.Buffer, int, int]


def _write_parts(
    lake: Lake, root: str, stem: str, extension: str, chunks: Iterator[Chunk]
) -> tuple[list, int, int, int]:
    """Write the chunks into ``<stem>_<part>.<extension>`` under ``root``, each part atomically (a part appears
    only when its last chunk is written); the files written, bytes, rows and escaped cells."""
    files: list[str] = []
    size = rows = escaped = 0
    with contextlib.ExitStack() as stack:
        handle = None
        for number, data, count, cells in chunks:
            if handle is None or len(files) != number:
                # The previous part is complete: closing its writer puts it in place.
                stack.close()
                files.append(f"{stem}_{number}.{extension}")
                handle = stack.enter_context(
                    open(stack.enter_context(lake.writing(posixpath.join(root, files[-1]))), "wb")
                )
            handle.write(data)
            size, rows, escaped = size + len(data), rows + count, escaped + cells
    return files, size, rows, escaped


def _encoded_parts(
    table: str, source: pd.DataFrame | StoredTable, fmt: str, rows_per_part: int, escape: bool
) -> tuple[list[dict], Iterator[Chunk]]:
    """The CDM attributes of one table and the chunks of its parts, made as they are written."""
    if isinstance(source, StoredTable):
        if fmt == "csv" and source.plain(table):
            if source.streamable(table):
                return source.attributes(), source.csv_parts(rows_per_part, escape)
            ordered = source.ordered(table)
            if ordered is not None:
                return source.attributes(), _arrow_parts(ordered, rows_per_part, escape)
        source = source.frame(table)
    attributes = [{"name": str(c), "dataType": cdm_type(str(c), source[c].dtype)} for c in source.columns]
    return attributes, _frame_parts(source, fmt, rows_per_part, escape)


def _frame_parts(df: pd.DataFrame, fmt: str, rows_per_part: int, escape: bool) -> Iterator[Chunk]:
    parts = [df.iloc[i : i + rows_per_part] for i in range(0, len(df), rows_per_part)] or [df.iloc[0:0]]
    for number, part in enumerate(parts, start=1):
        escaped = 0
        if fmt == "csv" and escape:
            part, escaped = escape_formula_cells(part)
        data = _csv_bytes(part) if fmt == "csv" else _parquet_bytes(part.reset_index(drop=True))
        yield number, data, len(part), escaped


@dataclass(frozen=True)
class StoredTable:
    """An output table kept as one Parquet file in the lake (the asset of an earlier stage).

    A CSV export reads it in batches, never whole, when :func:`ci_pipeline.outputs.finish` would leave it as it
    is: text columns and the contract's timestamp columns only, the contract's columns in order, every key and
    identifying value filled, keys unique and in order. The bytes are those the frame path writes. Any other table
    is loaded and finished like a frame (the check's error names what is wrong).
    """

    lake: Lake
    #: Lake-relative path of the Parquet file.
    path: str

    def _require(self) -> None:
        if not self.lake.exists(self.path):
            raise StorageError(f"{self.lake.url(self.path)}: not found in the lake; run the stage that writes it")

    def _file(self) -> pq.ParquetFile:
        self._require()
        return pq.ParquetFile(self.lake.fs.open(self.lake.path(self.path), "rb"))

    def state(self) -> list:
        """The stored file's size, modified time and ETag: any change of the file changes them."""
        self._require()
        return FileState.from_info(self.lake.info(self.path)).to_json()

    def frame(self, table: str) -> pd.DataFrame:
        """The whole table, checked and ordered by :func:`ci_pipeline.outputs.finish`."""
        # Dates stay Arrow dates (a column of none at all is still typed a date).
        return outputs.finish(table, self._file().read().to_pandas(types_mapper=_ARROW_DATES.get))

    def plain(self, table: str) -> bool:
        """Whether the file's values are written as they are (see the class): the contract's columns in order,
        timestamps only where the contract has them, text in the key, identifying and JSON columns, and otherwise
        text, booleans, numbers or nothing (:func:`~ci_pipeline.dataverse.naming.column_text` writes pandas' text
        of them)."""
        spec = outputs.contract(table)
        schema = self._file().schema_arrow
        if not outputs.in_contract_order(spec, schema):
            return False
        for column in schema:
            text = outputs.is_text(column.type)
            if pa.types.is_timestamp(column.type):
                if column.name not in spec.timestamps:
                    return False
            elif column.name in (spec.key, *spec.identifying, *spec.json_columns, *spec.timestamps):
                if not text:
                    return False
            elif not (text or any(check(column.type) for check in PLAIN_TYPES)):
                return False
        return True

    def streamable(self, table: str) -> bool:
        """Whether a :meth:`plain` file can be exported batch by batch as it is: every key and identifying value
        filled, keys strictly increasing."""
        spec = outputs.contract(table)
        return self._keys_in_order(spec.key, dict.fromkeys([spec.key, *spec.identifying]))

    def ordered(self, table: str) -> pa.Table | None:
        """A :meth:`plain` file out of key order, read whole as Arrow and sorted by the key (tables that grow with
        the customers: keys, measures, memberships); None when a key or identifying value is missing (the frame
        path then names the rows)."""
        spec = outputs.contract(table)
        rows = self._file().read()
        if any(rows.column(c).null_count for c in dict.fromkeys([spec.key, *spec.identifying])):
            return None
        return sorted_by_key(table, rows, spec.key)

    def _keys_in_order(self, key: str, filled: dict) -> bool:
        """Every key and identifying value filled, keys strictly increasing (read in batches of the key and of the
        columns whose statistics do not rule out a missing value)."""
        file = self._file()
        read = [c for c in filled if c == key or not stated_filled(file.metadata, c)]
        last = None
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=read):
            if any(batch.column(c).null_count for c in read):
                return False
            keys = batch.column(key)
            if len(keys) == 0:
                continue
            if last is not None and not keys[0].as_py() > last:
                return False
            if len(keys) > 1 and not pc.all(pc.greater(keys[1:], keys[:-1])).as_py():
                return False
            last = keys[-1].as_py()
        return True

    def attributes(self) -> list[dict]:
        """The CDM attributes of the stored columns (as :func:`cdm_type` gives them for the finished frame)."""
        return [
            {
                "name": column.name,
                "dataType": "guid"
                if column.name in GUID_COLUMNS
                else "dateTime"
                if pa.types.is_timestamp(column.type)
                else "date"
                if pa.types.is_date(column.type)
                else "string",
            }
            for column in self._file().schema_arrow
        ]

    def csv_parts(self, rows_per_part: int, escape: bool) -> Iterator[Chunk]:
        """The CSV chunks of parts of ``rows_per_part`` rows (at least one part, maybe empty), one per batch read:
        a part is never held whole, only the batches being converted."""
        file = self._file()
        batches = file.iter_batches(batch_size=min(rows_per_part, BATCH_ROWS))
        return _csv_chunks(_numbered(batches, rows_per_part, file.schema_arrow), escape)


def _numbered(
    batches: Iterator[pa.RecordBatch], rows_per_part: int, schema: pa.Schema
) -> Iterator[tuple[int, pa.Table]]:
    """The rows of ``batches`` cut at every ``rows_per_part`` rows, each piece with the number of its part (at
    least one piece: an empty table is one empty part)."""
    number, rows = 1, 0
    empty = True
    for batch in batches:
        while batch.num_rows:
            if rows == rows_per_part:
                number, rows = number + 1, 0
            taken = batch.slice(0, rows_per_part - rows)
            yield number, pa.Table.from_batches([taken])
            empty = False
            rows += taken.num_rows
            batch = batch.slice(taken.num_rows)
    if empty:
        yield number, schema.empty_table()


def _csv_chunks(pieces: Iterator[tuple[int, pa.Table]], escape: bool) -> Iterator[Chunk]:
    """Each piece as CSV text, two pieces converted at once by threads (Arrow's kernels and CSV writer release the
    GIL) while the next is read and the last written."""

    def encoded(piece: tuple[int, pa.Table]) -> Chunk:
        number, rows = piece
        return (number, *_csv_part(rows, escape))

    return mapped_ahead(encoded, pieces)


#: Rows read from a stored table at a time.
BATCH_ROWS = 65_536


#: Types of a plain stored column besides text and the contract's timestamps.
PLAIN_TYPES = (pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating, pa.types.is_null, pa.types.is_date32)
#: Arrow dates read into pandas as Arrow dates, not Python objects.
_ARROW_DATES = {pa.date32(): pd.ArrowDtype(pa.date32())}


def _arrow_parts(rows: pa.Table, rows_per_part: int, escape: bool) -> Iterator[Chunk]:
    """CSV chunks of parts of a whole Arrow table (at least one part, maybe empty), a batch of rows at a time."""
    return _csv_chunks(_numbered(iter(rows.to_batches(max_chunksize=BATCH_ROWS)), rows_per_part, rows.schema), escape)


def _csv_part(rows: pa.Table, escape: bool) -> tuple[pa.Buffer, int, int]:
    """CSV text from the Arrow columns of a plain table: the bytes :func:`_csv_bytes` writes for the frame."""
    columns = {}
    escaped = 0
    for n, name in enumerate(rows.column_names):
        values = rows.column(n)
        if pa.types.is_timestamp(values.type):
            text = utc_seconds_text(values)
        else:
            text = column_text(values, timestamp=False).cast(pa.large_string())
            if escape:
                text, count = _escape_formulas(text)
                escaped += count
        columns[f"{n}:{name}"] = pc.fill_null(text, "")
    return _write_csv(pa.table(columns)), rows.num_rows, escaped


def _escape_formulas(text: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, int]:
    """:func:`escape_formula_cells` for one Arrow text column."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    starts = pa.array(_formula_starts(text))
    if not pc.any(starts).as_py():
        return text, 0
    plain = pc.fill_null(pc.match_substring_regex(text, PLAIN_NUMBER), False)
    risky = pc.and_(starts, pc.invert(plain))
    count = pc.sum(risky).as_py() or 0
    if not count:
        return text, 0
    quoted = pc.binary_join_element_wise(pa.scalar("'", pa.large_string()), text, pa.scalar("", pa.large_string()))
    return pc.if_else(risky, quoted, text), int(count)


#: Whether a byte is one of :data:`FORMULA_START` (all ASCII, so a first byte is a first character).
_FORMULA_BYTE = np.zeros(256, dtype=bool)
_FORMULA_BYTE[[ord(c) for c in FORMULA_START]] = True


def _formula_starts(text: pa.Array) -> np.ndarray:
    """Per cell whether it starts with a formula character, from the first byte of each value in the column's own
    buffers (no text sliced or looked up per cell); False for missing and empty cells."""
    if not len(text):
        return np.zeros(0, dtype=bool)
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[text.offset : text.offset + len(text) + 1]
    starts, lengths = offsets[:-1], np.diff(offsets)
    first = np.zeros(len(text), dtype=np.uint8)
    filled = lengths > 0
    if filled.any():
        first[filled] = np.frombuffer(text.buffers()[2], dtype=np.uint8)[starts[filled]]
    found = _FORMULA_BYTE[first] & filled
    if text.null_count:
        found &= text.is_valid().to_numpy(zero_copy_only=False)
    return found


#: One exported table: its name, its CDM attributes and its data files (relative to the export root).
Entity = tuple[str, list[dict], list[str]]


def _write_model_json(lake: Lake, root: str, name: str, modified: str, entities: list[Entity]) -> str:
    """model.json of a CSV export: the entities with their absolute partition locations (:func:`public_url`) and
    CSV settings."""
    model = {
        "name": name,
        "description": f"Output tables exported by ci_pipeline ({name})",
        "version": "1.0",
        "modifiedTime": modified,
        "entities": [
            {
                "$type": "LocalEntity",
                "name": table,
                "description": "",
                "attributes": attributes,
                "partitions": [
                    {
                        "name": posixpath.basename(f).rsplit(".", 1)[0],
                        "refreshTime": modified,
                        "location": public_url(lake, posixpath.join(root, f)),
                        "fileFormatSettings": CSV_SETTINGS,
                    }
                    for f in files
                ],
            }
            for table, attributes, files in entities
        ],
    }
    return lake.write_bytes(posixpath.join(root, MODEL_JSON), _json(model))


def _write_manifest(lake: Lake, root: str, modified: str, entities: list[Entity]) -> str:
    """default.manifest.cdm.json of a Parquet export, with one ``<table>.cdm.json`` definition per entity."""
    for table, attributes, _files in entities:
        definition = {
            "jsonSchemaSemanticVersion": "1.1.0",
            "imports": [{"corpusPath": "cdm:/foundations.cdm.json"}],
            "definitions": [
                {
                    "entityName": table,
                    "hasAttributes": [
                        {"name": a["name"], "purpose": "hasA", "dataType": a["dataType"]} for a in attributes
                    ],
                }
            ],
        }
        lake.write_bytes(posixpath.join(root, f"{table}.cdm.json"), _json(definition))
    manifest = {
        "jsonSchemaSemanticVersion": "1.1.0",
        "imports": [{"corpusPath": "cdm:/foundations.cdm.json"}],
        "manifestName": "default",
        "lastFileModifiedTime": modified,
        "entities": [
            {
                "type": "LocalEntity",
                "entityName": table,
                "entityPath": f"{table}.cdm.json/{table}",
                "dataPartitions": [
                    {
                        "name": posixpath.basename(f).rsplit(".", 1)[0],
                        "location": f,
                        "exhibitsTraits": [{"traitReference": "is.partition.format.parquet"}],
                    }
                    for f in files
                ],
            }
            for table, _attributes, files in entities
        ],
    }
    return lake.write_bytes(posixpath.join(root, MANIFEST), _json(manifest))


def _json(obj) -> bytes:
    return json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")


def _clean_up(lake: Lake, root: str, written: dict[str, list[str]], retention: int) -> list[str]:
    """Delete part files of the current snapshot that this run did not write (a rerun with fewer parts), then
    whole snapshots beyond ``retention`` per table."""
    removed: list[str] = []
    for table, files in written.items():
        keep = set(files)
        snapshots: dict[str, list[str]] = {}
        for path in lake.find(posixpath.join(root, table)):
            relative = path[len(root) + 1 :] if path.startswith(root + "/") else path
            pieces = relative.split("/")
            if len(pieces) != 6 or posixpath.basename(relative).startswith("."):
                continue
            snapshots.setdefault("/".join(pieces[:5]), []).append(relative)
        current = posixpath.dirname(files[0])
        for relative in snapshots.get(current, []):
            if relative not in keep:
                lake.delete(posixpath.join(root, relative))
        for old in sorted(snapshots)[: max(0, len(snapshots) - retention)]:
            if old != current:
                lake.delete(posixpath.join(root, old), recursive=True)
                removed.append(old)
    return removed


@dataclass(frozen=True)
class ExportedEntity:
    """One table of an export as its metadata describes it."""

    name: str
    attributes: list[tuple[str, str]]
    files: list[str]
    format: str


def read_export(lake: Lake, name: str, folder: str = "exports") -> list[ExportedEntity]:
    """The entities of an export, from its model.json or manifest; files as lake-relative paths."""
    root = posixpath.join(folder, name)
    if lake.exists(posixpath.join(root, MODEL_JSON)):
        model = json.loads(lake.read_bytes(posixpath.join(root, MODEL_JSON)))
        prefix = public_url(lake, root).rstrip("/") + "/"
        entities = []
        for entity in model.get("entities", []):
            files = []
            for partition in entity.get("partitions", []):
                location = partition["location"]
                if location.startswith(prefix):
                    files.append(posixpath.join(root, location[len(prefix) :]))
                elif f"/{name}/" in location:
                    files.append(posixpath.join(root, location.split(f"/{name}/", 1)[1]))
                else:
                    raise UserError(
                        f"{lake.url(posixpath.join(root, MODEL_JSON))}: partition {location} lies outside the "
                        "export folder; re-export it"
                    )
            attributes = [(a["name"], a.get("dataType", "string")) for a in entity.get("attributes", [])]
            entities.append(ExportedEntity(entity["name"], attributes, files, "csv"))
        return entities
    if lake.exists(posixpath.join(root, MANIFEST)):
        manifest = json.loads(lake.read_bytes(posixpath.join(root, MANIFEST)))
        entities = []
        for entity in manifest.get("entities", []):
            table = entity["entityName"]
            document = entity["entityPath"].split("/", 1)[0]
            definition = json.loads(lake.read_bytes(posixpath.join(root, document)))["definitions"][0]
            attributes = [(a["name"], a.get("dataType", "string")) for a in definition["hasAttributes"]]
            files = [posixpath.join(root, p["location"]) for p in entity.get("dataPartitions", [])]
            entities.append(ExportedEntity(table, attributes, files, "parquet"))
        return entities
    raise NoExport(
        f"{lake.url(root)}: no export here (neither {MODEL_JSON} nor {MANIFEST}); run the pipeline with this export "
        "configured, or check publish.exports"
    )


class NoExport(StorageError):
    """An export folder holds neither a model.json nor a manifest: the export was never written there."""
