"""Readers: every format becomes one :class:`Batch` of rows that still know their file and line."""

from __future__ import annotations

import gzip
import io
import posixpath
import re
import zlib
from dataclasses import dataclass, field
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ci_pipeline.config.sources import CsvOptions, TableConfig
from ci_pipeline.errors import UserError
from ci_pipeline.ingest import cdm
from ci_pipeline.ingest.csvfile import END, FILE, LINE, START, STRING, other_delimiter, parse_csv
from ci_pipeline.ingest.storage import SourceLocation

#: Incremental layout: the operation (upsert/delete) and when the change was written (seconds since epoch).
OP, ORDER = "__op", "__order"
POSITION = [FILE, LINE, START, END, OP, ORDER]
#: Prefix of the hidden boolean column marking which cells of a Parquet/Delta float column held NaN: pandas shows
#: NaN and null alike, but NaN is a malformed value and null a missing one.
NAN = "__nan:"
#: ``first``: a CSV record's first field, when it reads without parsing (its key if that is the first column).
BROKEN_COLUMNS = ["file", "line", "raw", "reason", "kind", "first"]


@dataclass
class Batch:
    """Rows read from a table's files, before types, keys and quarantine are applied.

    ``frame`` holds the data columns plus position columns (file, line, byte range of the raw text or -1);
    ``broken`` holds rows that could not even be split into columns.
    """

    frame: pd.DataFrame
    broken: pd.DataFrame
    texts: dict[str, bytes] = field(default_factory=dict)
    #: Types and formats the source itself declares (CDM attributes); configured columns override them.
    types: dict[str, str] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: What the reader found but did not read (a file outside the layout): told as warnings.
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return len(self.frame) + len(self.broken)

    @property
    def data_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c not in POSITION and not c.startswith(NAN)]

    def raw_text(self, rows: pd.DataFrame) -> pd.Series:
        """The raw text of some rows of ``frame``: the file's bytes for CSV rows, JSON of the values otherwise."""
        raw = pd.Series(pd.NA, index=rows.index, dtype=STRING)
        from_text = rows[START] >= 0
        for file, group in rows[from_text].groupby(FILE, sort=False):
            text = self.texts.get(file)
            if text is not None:
                raw[group.index] = [
                    text[s:e].decode("utf-8", "replace") for s, e in zip(group[START], group[END], strict=True)
                ]
        others = rows.loc[~from_text, self.data_columns]
        if len(others):
            raw[others.index] = others.to_json(orient="records", lines=True, date_format="iso").splitlines()
        return raw


def empty_broken() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "file": pd.array([], dtype=STRING),
            "line": pd.array([], dtype="Int64"),
            "raw": pd.array([], dtype=STRING),
            "reason": pd.array([], dtype=STRING),
            "kind": pd.array([], dtype=STRING),
            "first": pd.array([], dtype=STRING),
        }
    )


def combine(batches: list[Batch], columns: list[str] | None = None) -> Batch:
    """One batch from several files (columns are the union, in first-seen order)."""
    frames = [b.frame for b in batches if len(b.frame.columns)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in columns or []})
    broken = pd.concat([b.broken for b in batches] or [empty_broken()], ignore_index=True)
    merged = Batch(frame=frame, broken=broken)
    for b in batches:
        merged.texts.update(b.texts)
        merged.files.extend(b.files)
        merged.notes.extend(b.notes)
        merged.warnings.extend(b.warnings)
        for name, kind in b.types.items():  # the first file's when they differ, as the columns' order
            merged.types.setdefault(name, kind)
    return merged


# -- files ---------------------------------------------------------------------------------------------------------
#: The names of the files a CSV table's folder holds: ``.csv``, or compressed with gzip, as Spark and ADF write them.
CSV_SUFFIXES = (".csv", ".csv.gz")


def read_csv_file(location: SourceLocation, options: CsvOptions, names: list[str] | None = None) -> Batch:
    """One CSV file (names: the columns when it has no header), gunzipped when its name ends in ``.gz``."""
    parsed = parse_csv(csv_bytes(location.read_bytes(), location.url), options, location.url, names)
    return Batch(
        frame=parsed.frame,
        broken=parsed.broken,
        texts={location.url: parsed.text},
        files=[location.url],
    )


def csv_bytes(data: bytes, url: str) -> bytes:
    """A CSV file's bytes, gunzipped when its name ends in ``.gz``.

    Raises:
        UserError: a ``.gz`` file that is not gzip or is cut short, naming it.
    """
    if not url.lower().endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{url}: not a readable gzip file ({exc}); replace it or remove it") from None


def read_parquet_file(location: SourceLocation) -> Batch:
    """One Parquet file; line = the row's number in the file (from 1)."""
    data = io.BytesIO(location.read_bytes())
    try:
        require_distinct_columns(pq.read_schema(data).names, location.url)
        table = pq.read_table(data)
    except pa.ArrowInvalid as exc:
        raise UserError(f"{location.url}: not a readable Parquet file ({exc}); replace or remove it") from None
    frame = arrow_frame(table)
    frame[FILE] = pd.array([location.url] * len(frame), dtype=STRING)
    frame[LINE] = pd.array(np.arange(1, len(frame) + 1), dtype="Int64")
    frame[START] = -1
    frame[END] = -1
    return Batch(frame=frame, broken=empty_broken(), files=[location.url], types=stored_dates(table.schema))


def stored_dates(schema: pa.Schema) -> dict[str, str]:
    """The columns a Parquet file stores as dates (``date32``/``date64``): checked as declared ``date`` columns
    (their ``date_range`` too), which :func:`arrow_frame` hands over as timestamps at midnight."""
    return {f.name: "date" for f in schema if pa.types.is_date(f.type)}


def require_distinct_columns(names: list[str], url: str) -> None:
    """Refuse a Parquet file that names a column twice: which of the two a column means cannot be told.

    Raises:
        UserError: naming the file and the repeated column(s).
    """
    seen = pd.Series(names, dtype=object)
    repeated = sorted(set(seen[seen.duplicated()]))
    if repeated:
        raise UserError(
            f"{url}: the file has more than one column named {', '.join(repeated)}; which one is meant cannot be "
            "told: write the file with distinct column names"
        )


#: Text as ``string``; integers as nullable integers, because pandas' default turns an integer column with nulls
#: into float64, which rounds values past 2**53.
_PANDAS_TYPES = {
    pa.string(): STRING,
    pa.large_string(): STRING,
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
}


def arrow_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as pandas (text as ``string``), with a hidden :data:`NAN` column per float column holding NaN.

    A dictionary column (pandas writes a ``category`` so) is read as its values, as any other column of their type.
    """
    for i, column in enumerate(table.columns):
        if pa.types.is_dictionary(column.type):
            table = table.set_column(i, table.field(i).name, column.cast(column.type.value_type))
        elif (text := _as_text(column)) is not None:
            table = table.set_column(i, table.field(i).name, text)
        elif pa.types.is_decimal(column.type):
            # As a declared decimal column holds its numbers (pandas would give Decimal objects, later text); through
            # the decimal text, which parses to the nearest float (a direct cast gives 19.99 as 19.990000000000002).
            table = table.set_column(i, table.field(i).name, column.cast(pa.string()).cast(pa.float64()))
        elif pa.types.is_date(column.type):
            # As milliseconds: pandas' nanoseconds end in 2262 and begin in 1677, inside many a typo's year.
            table = table.set_column(i, table.field(i).name, column.cast(pa.timestamp("ms")))
    # A named pandas index is a column of the file like any other; the unnamed one pandas adds is none of the data's.
    table = table.select([n for n in table.column_names if not _PANDAS_INDEX.fullmatch(n)])
    frame = table.to_pandas(types_mapper=_PANDAS_TYPES.get, ignore_metadata=True)
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_floating(column.type):
            nan = pc.fill_null(pc.is_nan(column), False).to_numpy(zero_copy_only=False)
            if nan.any():
                frame[NAN + name] = nan
    return frame


#: The column pandas writes for an index without a name (``df[mask].to_parquet()``).
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """A nested column (struct, list, map) as JSON text, a binary one as its text or, when it is no UTF-8, as hex;
    None for any other column. pandas would give nested values as Python's repr (a long list cut to '...') and
    fail on bytes that are no text."""
    kind = column.type
    if pa.types.is_nested(kind):
        return _in_duckdb(column, "to_json(c)::VARCHAR")
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        try:
            return column.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _in_duckdb(column, "hex(c)")
    return None


def _in_duckdb(column: pa.ChunkedArray, expression: str) -> pa.ChunkedArray:
    """``expression`` over the column ``c`` in DuckDB, row for row (DuckDB keeps the order of a projection)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("t", pa.table({"c": column}))
        return con.sql(f"SELECT {expression} AS c FROM t").to_arrow_table().column("c")
    finally:
        con.close()


def data_files(location: SourceLocation, suffix: str | tuple[str, ...]) -> list[SourceLocation]:
    """A file, or every ``*<suffix>`` file below a folder (hidden and ``_``-prefixed files such as ``_SUCCESS``
    skipped), sorted; ``suffix`` may be several."""
    location.require("file or folder", "path")
    if not location.isdir():
        return [location]
    found = [
        location.with_path(p)
        for p in location.find()
        if p.lower().endswith(suffix) and not posixpath.basename(p).startswith((".", "_"))
    ]
    if not found:
        shown = " or ".join([suffix] if isinstance(suffix, str) else suffix)
        raise UserError(f"{location.url}: the folder holds no {shown} files; check the path and the format")
    return found


def without_empty_parts(files: list[SourceLocation]) -> tuple[list[SourceLocation], list[SourceLocation]]:
    """``files`` without those of 0 bytes, and those: a folder export (Spark writes a part per task) may hold parts
    with no header and no rows. A file alone, or a folder of empty files only, is kept (reading it says why)."""
    empty = [f for f in files if f.fs.size(f.path) == 0] if len(files) > 1 else []
    if not empty or len(empty) == len(files):
        return files, []
    return [f for f in files if f not in empty], empty


def read_csv(location: SourceLocation, table: TableConfig) -> Batch:
    """A CSV file or a folder of CSV files with the same layout."""
    names = list(table.columns) if not table.csv.header else None
    files, empty = without_empty_parts(data_files(location, CSV_SUFFIXES))
    batches = [read_csv_file(f, table.csv, names) for f in files]
    if table.csv.header:
        batches = [batches[0], *(as_first_header(b, batches[0], table.csv.delimiter) for b in batches[1:])]
    batch = combine(batches, names)
    if empty:
        shown = ", ".join(posixpath.basename(f.url) for f in empty[:5]) + (" ..." if len(empty) > 5 else "")
        batch.notes.append(f"{len(empty)} empty file(s) of 0 bytes skipped (no header, no rows): {shown}")
    return batch


def other_delimiter_in_folder(url: str, columns: list[str], first: str, known: list[str], delimiter: str) -> str:
    """Why a file of a folder whose header (``columns``) reads as one column that another delimiter would split is
    refused, while the folder's ``first`` file has the columns ``known``; empty when it is not so."""
    shown = other_delimiter(columns, delimiter)
    if shown is None or len(known) < 2:
        return ""
    return (
        f"{url}: its header reads as one column ({columns[0][:80]!r}) with csv.delimiter {delimiter!r}, while "
        f"{first} in the same folder has the columns {', '.join(known)}: it looks '{shown}'-separated. Write it "
        f"with {delimiter!r} as the folder's other files are, or move it out of the folder"
    )


def as_first_header(batch: Batch, first: Batch, delimiter: str) -> Batch:
    """A later file of a folder read with the first file's column names where its header writes them in another
    case (``ID`` for ``id``), as Spark and the reference product match them.

    Raises:
        UserError: the file's header reads as one column that another delimiter would split (``id;name``), while
            the first file's does not: naming the file and the fix.
    """
    url, columns = batch.files[0], batch.data_columns
    known = first.data_columns
    refused = other_delimiter_in_folder(url, columns, first.files[0], known, delimiter)
    if refused:
        raise UserError(refused)
    folded = {name.casefold(): name for name in known}
    renamed = {
        name: folded[name.casefold()]
        for name in columns
        if name not in known and name.casefold() in folded and folded[name.casefold()] not in columns
    }
    if renamed:
        batch.frame = batch.frame.rename(columns=renamed)
        batch.notes.append(
            f"{url}: header names in another case than those of {first.files[0]} read as its columns: "
            + ", ".join(f"{old} as {new}" for old, new in renamed.items())
        )
    return batch


def read_parquet(location: SourceLocation) -> Batch:
    """A Parquet file or a folder of Parquet files (e.g. a Spark output folder, whose ``name=value`` folders hold
    the values of its partition columns: they are columns of each file below them)."""
    files = data_files(location, ".parquet")
    batches = [_with_partitions(read_parquet_file(f), location, f) for f in files]
    batch = combine(batches)
    batch.warnings += mixed_types(batches, batch.frame)
    return batch


def mixed_types(batches: list[Batch], combined: pd.DataFrame) -> list[str]:
    """A warning per column that files of a folder store with types that have no common one (int64 in one, text in
    another; int32 and int64 are int64): their values are then read together as text, and declaring the column's
    type checks them all as one."""
    first: dict[str, tuple[str, str]] = {}
    said: dict[str, str] = {}
    for b in batches:
        for column in b.data_columns:
            kind = str(b.frame[column].dtype)
            seen_kind, seen_in = first.setdefault(column, (kind, b.files[0]))
            if seen_kind != kind and column not in said and combined[column].dtype == object:
                said[column] = (
                    f"{b.files[0]}: column '{column}' is stored as {kind}, but as {seen_kind} in {seen_in}: the "
                    "folder's values of it are read as text; declare its type under columns to read them all as one"
                )
    return list(said.values())


#: A folder of a Hive-style partitioned output (Spark, pyarrow, Hive): ``country=NL``.
_PARTITION = re.compile(r"([^=/]+)=([^/]*)")


def _with_partitions(batch: Batch, root: SourceLocation, file: SourceLocation) -> Batch:
    """``batch`` of ``file`` with a text column per ``name=value`` folder between ``root`` and the file that the
    file does not hold itself (the value URL-decoded; Hive's ``__HIVE_DEFAULT_PARTITION__`` is no value)."""
    for name, value in _partitions(root, file):
        if name not in batch.frame.columns:
            value = None if value == "__HIVE_DEFAULT_PARTITION__" else value
            batch.frame[name] = pd.array([value] * len(batch.frame), dtype=STRING)
    return batch


def _partitions(root: SourceLocation, file: SourceLocation) -> list[tuple[str, str]]:
    """``(name, value)`` of each ``name=value`` folder between ``root`` and ``file`` (the value URL-decoded)."""
    base = root.path.rstrip("/") + "/"
    if not file.path.startswith(base):
        return []
    found = [_PARTITION.fullmatch(folder) for folder in file.path[len(base) :].split("/")[:-1]]
    return [(m[1], unquote(m[2])) for m in found if m]


def partition_columns(root: SourceLocation, file: SourceLocation) -> list[str]:
    """The partition columns the folders between ``root`` and ``file`` hold (:func:`read_parquet`)."""
    return [name for name, _ in _partitions(root, file)]


def read_cdm(location: SourceLocation, table: TableConfig, table_name: str) -> Batch:
    """An entity of a CDM folder: CSV partitions (headerless ones take the attribute list) or Parquet ones."""
    entity = cdm.read_entity(location, table.entity or table_name)
    if not entity.partitions:
        raise UserError(f"{location.url}: entity {entity.name} has no partitions; nothing to read")
    parts = []
    for part in entity.partitions:
        if part.format == "parquet":
            parts.append(read_parquet_file(part.location))
        else:
            # A configured csv.encoding overrides what the CDM document says.
            options = part.csv
            if user_encoding(table):
                options = options.model_copy(update={"encoding": table.csv.encoding})
            parts.append(read_csv_file(part.location, options, entity.columns))
    batch = combine(parts, entity.columns)
    batch.types, batch.formats = entity.types, entity.formats
    return batch


def user_encoding(table: TableConfig) -> bool:
    """Whether the configuration sets csv.encoding itself (it then overrides what a CDM document says)."""
    return "encoding" in table.csv.model_fields_set
