"""Checks a configuration's sources before a run: paths exist, declared and key columns are there, data is readable.

Reads headers, schemas, CDM documents and a bounded sample of each CSV file (the first :data:`SAMPLE_BYTES` of at
most :data:`SAMPLE_FILES` files), never whole files, so it is quick enough for ``ci-pipeline validate`` and for
the check ``ci-pipeline run`` makes before it writes anything.
"""

from __future__ import annotations

import codecs
import gzip
import re
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from ci_pipeline.config import ProjectConfig
from ci_pipeline.config.base import did_you_mean
from ci_pipeline.config.sources import CsvOptions, TableConfig
from ci_pipeline.errors import UserError
from ci_pipeline.ingest import cdm
from ci_pipeline.ingest.csvfile import (
    UNCLOSED,
    VALUE_LINE_BREAKS,
    ParsedCsv,
    bom_encoding,
    empty_file,
    excel_separator_line,
    header_names,
    listed_lines,
    other_delimiter,
    parse_csv,
    quoted_records,
    utf8_lines,
)
from ci_pipeline.ingest.date_sample import date_problems
from ci_pipeline.ingest.read import (
    CSV_SUFFIXES,
    data_files,
    other_delimiter_in_folder,
    partition_columns,
    require_distinct_columns,
    without_empty_parts,
)
from ci_pipeline.ingest.storage import SourceLocation
from ci_pipeline.lake import Lake

#: Bytes read from the start of each CSV file: enough for the header and the first thousands of rows.
SAMPLE_BYTES = 1 << 20
#: Files of a folder that are sampled (the header comes from the first).
SAMPLE_FILES = 16
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SourceSchema:
    """What the preflight learned about one source table.

    ``columns`` is None when they cannot be known without reading the data (an incremental table whose
    ``FullData`` folder does not exist yet). ``warnings`` are what a run would quarantine though the configuration
    reads the data as it is written (a stray quote): told by ``validate``, they do not stop a run.
    """

    columns: list[str] | None
    file: str
    warnings: list[str] = field(default_factory=list)


def source_problems(config: ProjectConfig, lake: Lake | None = None) -> list[str]:
    """Every problem found in the sources, each starting with its key path (``sources.crm.tables.contacts.path``).

    Args:
        config: the loaded configuration.
        lake: the lake whose filesystems reach the sources (default: the configured one).
    """
    return inspect_sources(config, lake)[1]


def inspect_sources(
    config: ProjectConfig, lake: Lake | None = None, tables: Collection[tuple[str, str]] | None = None
) -> tuple[dict[tuple[str, str], SourceSchema], list[str]]:
    """The columns of each readable source table, and every problem found.

    Args:
        config: the loaded configuration.
        lake: the lake whose filesystems reach the sources (default: the configured one).
        tables: ``(source, table)`` pairs to open (default: every table).
    """
    lake = lake or Lake.from_config(config.lake, config.base_dir)
    schemas: dict[tuple[str, str], SourceSchema] = {}
    problems: list[str] = []
    for source_name, source in config.sources.items():
        for table_name, table in source.tables.items():
            if tables is not None and (source_name, table_name) not in tables:
                continue
            label = f"sources.{source_name}.tables.{table_name}"
            try:
                schema, found = _inspect(config, lake, table, table_name, label)
            except UserError as exc:
                problems.append(f"{label}.path: {exc}")
                continue
            schemas[source_name, table_name] = schema
            problems.extend(f"{label}.{p}" for p in found)
            if schema.columns is None:
                continue
            if table.primary_key not in schema.columns:
                problems.append(
                    f"{label}.primary_key: column '{table.primary_key}' is not in {table.path} (columns: "
                    f"{', '.join(schema.columns)}){did_you_mean(table.primary_key, schema.columns)}; use one of them"
                )
            for column in table.columns:
                if column not in schema.columns:
                    problems.append(
                        f"{label}.columns.{column}: declared, but {schema.file} has no column '{column}'"
                        f"{did_you_mean(column, schema.columns)}; correct the name, or remove it if the column was "
                        "dropped from the source"
                    )
    return schemas, problems


def _inspect(
    config: ProjectConfig, lake: Lake, table: TableConfig, table_name: str, label: str
) -> tuple[SourceSchema, list]:
    """The table's schema and its problems as ``sub.key: message`` (relative to its key path ``label``)."""
    location = SourceLocation.open(lake, config.resolve_location(table.path))
    if table.format == "cdm":
        entity = cdm.read_entity(location, table.entity or table_name, partitions=table.incremental is None)
        where = f"{location.url} (entity {entity.name})"
        if table.incremental is None and not entity.partitions:
            return SourceSchema(entity.columns, where), [
                f"path: {where} has no partitions; a run would have nothing to read (check the CDM document)"
            ]
        problems, warnings = _cdm_partitions(entity, table, label)
        return SourceSchema(entity.columns, where, warnings), problems
    if table.incremental is not None:
        # Columns come from the full snapshot's first file; hour folders are checked when they are read.
        location.require("incremental table folder", "path")
        full = location.child("FullData")
        if not full.exists():
            return SourceSchema(None, location.url), []
        suffix = ".parquet" if table.format == "parquet" else ".csv"
        files = data_files(full, suffix)[:1]
        schema, _ = _parquet(files, table) if table.format == "parquet" else _csv(files, table, label)
        return schema, []
    if table.format == "delta":
        return SourceSchema(_delta_columns(location, lake), location.url), []
    if table.format == "parquet":
        return _parquet(data_files(location, ".parquet"), table, location)
    return _csv(without_empty_parts(data_files(location, CSV_SUFFIXES))[0], table, label)


def _cdm_partitions(entity: cdm.Entity, table: TableConfig, label: str) -> tuple[list[str], list[str]]:
    """The problems and warnings of a sample of a CDM entity's CSV partitions, as :func:`_csv` finds them in a CSV
    table's files: bytes not in the encoding, every record with another number of fields than the entity's
    attributes (a headerless partition with a column more or fewer), records a run would quarantine."""
    problems: list[str] = []
    miscounted = odd_rows = None
    for part in entity.partitions[:SAMPLE_FILES]:
        if part.format != "csv":
            continue
        head = _head(part.location)
        url, whole = part.location.url, len(head) <= SAMPLE_BYTES
        options = part.csv
        if "encoding" in table.csv.model_fields_set:
            options = options.model_copy(update={"encoding": table.csv.encoding})
        text, bad = _decode_sample(head[:SAMPLE_BYTES], options.encoding, whole, url)
        if bad:
            problems.append(f"csv.encoding: {bad}")
            text, whole = text[: text.rfind("\n") + 1], False
        parsed = _parse_sample(_whole_records(text, whole, options.quotechar), options, url, entity.columns)
        miscounted = miscounted or _every_line_miscounted(parsed, whole, url, "the entity's attributes")
        odd_rows = odd_rows or _quarantined_rows(parsed, whole, options, url, label)
    problems += [miscounted] if miscounted and not table.allow_empty else []
    return problems, [odd_rows] if odd_rows and not miscounted else []


def _delta_columns(location: SourceLocation, lake: Lake) -> list[str]:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from ci_pipeline.ingest.delta import delta_storage_options

    location.require("Delta table folder", "path")
    if not location.child("_delta_log").exists():
        raise UserError(f"{location.url}: not a Delta table (no _delta_log folder); check the path")
    uri = location.path if "://" not in location.url or location.url.startswith("file://") else f"az://{location.path}"
    try:
        # The schema comes from the transaction log; no data file is read.
        schema = DeltaTable(uri, storage_options=delta_storage_options(lake, location.url) or None).schema()
    except TableNotFoundError:
        raise UserError(f"{location.url}: not a Delta table (no readable _delta_log); check the path") from None
    return list(schema.to_arrow().names)


def _parquet(
    files: list[SourceLocation], table: TableConfig, root: SourceLocation | None = None
) -> tuple[SourceSchema, list[str]]:
    rows = 0
    columns: list[str] = []
    for i, file in enumerate(files[:SAMPLE_FILES]):
        try:
            with file.fs.open(file.path, "rb") as handle:
                metadata = pq.ParquetFile(handle).metadata
        except Exception as exc:  # pyarrow reports a damaged footer with several exception types
            raise UserError(f"{file.url}: not a readable Parquet file ({exc}); replace the file") from None
        names = metadata.schema.to_arrow_schema().names
        require_distinct_columns(names, file.url)
        if i == 0:
            # The partition columns of a Hive-style folder are in the folder names (read.partition_columns).
            columns = names + [c for c in partition_columns(root, file) if c not in names] if root else names
        rows += metadata.num_rows
    problems = []
    if rows == 0 and len(files) <= SAMPLE_FILES and not table.allow_empty:
        problems.append(f"path: {files[0].url} holds no rows; a run would fail on it ({_EMPTY_FIX})")
    return SourceSchema(columns, files[0].url), problems


_EMPTY_FIX = "check the export that writes it, or set allow_empty: true for this table"


def _csv(files: list[SourceLocation], table: TableConfig, label: str) -> tuple[SourceSchema, list[str]]:
    problems: list[str] = []
    quoting: tuple[bool, str] | None = None
    miscounted: str | None = None
    odd_rows: str | None = None
    columns: list[str] | None = list(table.columns) if not table.csv.header else None
    data_rows = 0
    for i, file in enumerate(files[:SAMPLE_FILES]):
        head = _head(file)
        whole = len(head) <= SAMPLE_BYTES
        text, bad = _decode_sample(head[:SAMPLE_BYTES], table.csv.encoding, whole, file.url)
        if bad:
            problems.append(f"csv.encoding: {bad}")
            # The text ends at the bad byte: only the lines before it are whole.
            text, whole = text[: text.rfind("\n") + 1] if "\n" in text else text, False
        lines = _LINE_BREAK.split(text)
        if table.csv.header:
            if i == 0:
                if whole and not text.strip():
                    raise UserError(empty_file(file.url))
                if not lines[0].strip():
                    raise UserError(
                        f"{file.url}: the first line is empty; a CSV with csv.header: true starts with its header"
                    )
                if len(lines) == 1 and not whole:
                    raise UserError(
                        f"{file.url}: no line break in the first {SAMPLE_BYTES // (1 << 20)} MiB, so no header can be "
                        "read; check that the file is a CSV text file (and csv.encoding, e.g. utf-16)"
                    )
                if excel_separator_line(lines[0], table.csv, file.url) and len(lines) > 1:
                    lines = lines[1:]
                columns = header_names(lines[0], table.csv, file.url)
                problems += _other_delimiter(columns, table, file.url)
                problems += _sample_dates(text, whole, table, file.url)
            elif lines[0].strip() and columns:
                # A later file of the folder: read with the first one's columns (another case of a name is matched).
                refused = other_delimiter_in_folder(
                    file.url, header_names(lines[0], table.csv, file.url), files[0].url, columns, table.csv.delimiter
                )
                problems += [f"path: {refused}"] if refused else []
            lines = lines[1:]
        # Told for the first file that shows it: the files of a folder come from one export.
        sample = _whole_records(text, whole, table.csv.quotechar)
        parsed = _parse_sample(sample, table.csv, file.url, columns)
        quoting = quoting or _broken_quoting(sample, parsed, whole, table, columns, file.url, label)
        miscounted = miscounted or _every_line_miscounted(parsed, whole, file.url)
        odd_rows = odd_rows or _quarantined_rows(parsed, whole, table.csv, file.url, label)
        filled = any(line.strip() for line in lines)
        data_rows += int(filled or not whole or bad is not None)
    if data_rows == 0 and len(files) <= SAMPLE_FILES and not table.allow_empty:
        what = "holds only its header" if table.csv.header else "is empty"
        problems.append(f"path: {files[0].url} {what}, no rows; a run would fail on it ({_EMPTY_FIX})")
    if miscounted and not table.allow_empty:
        problems.append(miscounted)
    warnings: list[str] = [odd_rows] if odd_rows and not miscounted else []
    if quoting:
        is_problem, message = quoting
        if is_problem:
            problems.append(message)
        else:
            warnings.append(f"{label}.{message}")
    return SourceSchema(columns, files[0].url, warnings), problems


def _other_delimiter(columns: list[str], table: TableConfig, url: str) -> list[str]:
    """``csv.delimiter: ...`` when the header reads as one column that another common delimiter would split."""
    shown = other_delimiter(columns, table.csv.delimiter)
    if shown is None:
        return []
    return [
        f"csv.delimiter: the header of {url} reads as one column ({columns[0][:80]!r}) with delimiter "
        f"{table.csv.delimiter!r}; it looks '{shown}'-separated: set csv.delimiter: \"{shown}\" for this table"
    ]


#: Share of the records read whose values span lines from which a table read line by line is a problem that stops
#: a run; below it, a warning (the run quarantines those records and loads the others).
MULTILINE_SHARE = 0.05


def _parse_sample(sample: str, options: CsvOptions, url: str, columns: list[str] | None) -> ParsedCsv | None:
    """The sample's whole records parsed as a run parses them, or None when the file cannot be (the run says why)."""
    try:
        return parse_csv(sample.encode("utf-8"), options.model_copy(update={"encoding": "utf-8"}), url, columns)
    except UserError:
        return None


def _quarantined_rows(parsed: ParsedCsv | None, whole: bool, options: CsvOptions, url: str, label: str) -> str | None:
    """A warning naming the records of the sample that a run would quarantine because they cannot be split into the
    header's columns (a wrong column count, a quote read as text, an escaped quote the table does not read, a quote
    not closed before the end of the file), with the first reason of each kind; None when there are none. Lines
    with an unclosed quote read line by line are told by :func:`_broken_quoting`."""
    if parsed is None:
        return None
    broken = parsed.broken
    if not options.multiline:
        broken = broken[~broken["reason"].str.startswith(UNCLOSED)]
    if broken.empty:
        return None
    lines = broken["line"].tolist()
    firsts = broken.drop_duplicates("kind")
    reasons = "; ".join(f"line {row.line}: {row.reason}" for row in firsts.itertuples())
    records = len(parsed.frame) + len(parsed.broken)
    return (
        f"{label}.path: {len(lines):,} of the {'' if whole else 'first '}{records:,} records of {url} "
        f"({listed_lines(lines)}) cannot be split into the header's columns; a run quarantines them and loads the "
        f"others. {reasons}"
    )


def _broken_quoting(
    records_text: str,
    parsed: ParsedCsv | None,
    whole: bool,
    table: TableConfig,
    columns: list[str] | None,
    url: str,
    label: str,
) -> tuple[bool, str] | None:
    """Lines of the sample that hold an odd number of quotes, which a table read line by line quarantines: a
    problem (``True``) when they are values over several lines (:func:`quoted_records`), which
    ``csv.multiline: true`` reads, in at least :data:`MULTILINE_SHARE` of the records (a warning for fewer); else a
    warning (``False``) that they are stray quotes, for the file to be fixed.

    A problem like a date format that most values are not in: the configuration does not read the file as it is
    written, and a run would quarantine sound records. A stray quote is broken data that the quarantine is for.

    ``records_text``: the sample's whole records; ``parsed``: them parsed as a run does (None: the run says why
    the file cannot be).
    """
    if table.csv.multiline or parsed is None or table.csv.quotechar not in records_text:
        return None
    sample = records_text.encode("utf-8")
    options = table.csv.model_copy(update={"encoding": "utf-8"})
    lines = parsed.broken.loc[parsed.broken["reason"].str.startswith(UNCLOSED), "line"].tolist()
    if not lines:
        return None
    read = len(_LINE_BREAK.split(records_text.rstrip("\r\n")))
    found = f"{len(lines):,} of the {'' if whole else 'first '}{read:,} lines of {url} ({listed_lines(lines)})"
    quoted = quoted_records(sample, options, url, columns)
    if quoted is None:
        return False, (
            f"path: {found} hold an unclosed quote that does not close as a value over several lines (a stray "
            "quote): a run quarantines these lines as broken quoting, and csv.multiline: true would not read them "
            "(each would run on over the records after it); fix the quotes in the file"
        )
    values = quoted.frame[quoted.columns]
    spanning = int(values.apply(lambda column: column.str.contains(r"[\r\n]", na=False)).any(axis=1).sum())
    records = len(values) + len(quoted.broken)
    # Many such records: the table is read otherwise than it is written, and a run stops rather than quarantine
    # a share of sound ones. A few: a note typed over two lines, quarantined while the rest are loaded.
    return spanning >= MULTILINE_SHARE * records, (
        f"csv.multiline: {found} hold a quoted value with a line break: {spanning:,} of the {records:,} records read "
        "have values over several lines, which this table reads line by line (csv.multiline is false), so a run "
        f"would quarantine them as broken quoting; set {label}.csv.multiline: true"
    )


def _every_line_miscounted(parsed: ParsedCsv | None, whole: bool, url: str, header: str = "the header") -> str | None:
    """``path: ...`` when every record of the sample (``parsed``) has another number of fields than the header
    (``header``: what gives the columns): a run would quarantine each and fail the table (a changed layout, another
    delimiter), as it does a table with no rows."""
    if parsed is None:
        return None
    wrong = parsed.broken[parsed.broken["kind"] == "column_count"]
    if len(parsed.frame) or wrong.empty:
        return None
    counts = wrong["reason"].value_counts()
    commonest = ", ".join(
        f"{reason} ({n:,}, e.g. line {wrong.loc[wrong['reason'] == reason, 'line'].iloc[0]})"
        for reason, n in counts.head(3).items()
    )
    return (
        f"path: every one of the {len(wrong):,} {'' if whole else 'first '}lines of {url} has another number of fields "
        f"than {header} ({commonest}); a run would quarantine every row and fail: check that the export's layout "
        f"and csv.delimiter agree with {header} ({_EMPTY_FIX})"
    )


def _whole_records(text: str, whole: bool, quotechar: str) -> str:
    """The sample without the record its end cut: up to its last line break or, when an odd number of quotes
    comes before that, up to the line break a few lines before (:data:`VALUE_LINE_BREAKS` at most) after which the
    quotes are even, so that a value over several lines is not cut in two. An odd count further up is an unclosed
    quote, and stays."""
    if whole:
        return text
    ends = [match.end() for match in _LINE_BREAK.finditer(text)]
    if not ends:
        return ""
    quotes = text.count(quotechar, 0, ends[-1])
    for i in range(len(ends) - 1, max(len(ends) - 2 - VALUE_LINE_BREAKS, -1), -1):
        if quotes % 2 == 0:
            return text[: ends[i]]
        quotes -= text.count(quotechar, ends[i - 1] if i else 0, ends[i])
    return text[: ends[-1]]


def _sample_dates(text: str, whole: bool, table: TableConfig, url: str) -> list[str]:
    """:func:`date_problems` of the sample's whole lines, when the table declares a date or datetime column."""
    if not any(spec.type in ("date", "datetime") for spec in table.columns.values()):
        return []
    lines = text if whole else text[: text.rfind("\n") + 1]
    options = table.csv.model_copy(update={"encoding": "utf-8"})
    return date_problems(table, parse_csv(lines.encode("utf-8"), options, url).frame, url)


def _head(location: SourceLocation) -> bytes:
    """The first :data:`SAMPLE_BYTES` + 1 bytes of a file (one more than the sample tells whether it is whole),
    of its text when it is gzipped (``.gz``)."""
    try:
        with location.fs.open(location.path, "rb") as handle:
            if location.path.lower().endswith(".gz"):
                # The sample of a gzip file is of its text: only as much of it as that needs is read.
                with gzip.open(handle) as text:
                    return text.read(SAMPLE_BYTES + 1)
            return handle.read(SAMPLE_BYTES + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"{location.url}: not a readable gzip file ({exc}); replace it or remove it") from None
    except FileNotFoundError:
        raise UserError(f"{location.url}: not found; check the path in the configuration") from None
    except OSError as exc:
        raise UserError(
            f"{location.url}: cannot read ({exc.strerror or exc}); check the file and its permissions"
        ) from None


def _decode_sample(head: bytes, encoding: str, whole: bool, url: str) -> tuple[str, str | None]:
    """The sample as text, and a message naming the line of the first byte that is not valid ``encoding``."""
    marked = bom_encoding(head)
    if marked and codecs.lookup(marked).name != codecs.lookup(encoding).name:
        # Read so, the file is NULs between characters: its header would be the first thing reported wrong.
        raise UserError(
            f"{url}: the file begins with a {marked.upper()} byte-order mark but is read as {encoding}: set "
            f"csv.encoding: {marked} for this table"
        )
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        # Not final unless the whole file was read: a character cut at the sample's end is not an error.
        return decoder.decode(head, final=whole).lstrip("\ufeff"), None
    except UnicodeDecodeError as exc:
        if codecs.lookup(encoding).name == "utf-8":
            lines = utf8_lines(head if whole else head[: head.rfind(b"\n") + 1])
            if lines.mostly_utf8:
                return lines.text.decode("utf-8"), None  # a run quarantines the lines that are not UTF-8
        before = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head[: exc.start])
        line = before.count("\n") + (before.count("\r") - before.count("\r\n")) + 1
        message = (
            f"{url}: line {line}: byte 0x{head[exc.start]:02x} is not valid {encoding}; a run would fail on it. The "
            "file is in another encoding: set csv.encoding for this table (for example cp1252, latin-1 or utf-16)"
        )
        return before, message
