"""Quick start from one file: read a CSV or Parquet table, infer what it is and write a configuration for it.

The decisions (primary key, customer table or transactions, mapping, matching method, measures, segments) are
made here on pandas and written as a commented YAML file that ``ci-pipeline validate`` accepts, so the user keeps
a configuration that says why each choice was made. Running it is the command's job
(:mod:`ci_pipeline.commands.quickstart`).
"""

from __future__ import annotations

import csv
import json
import os
import re
import textwrap
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import yaml

from ci_pipeline.activities import latest_accepted, parse_timestamps
from ci_pipeline.config.activities import ActivitiesConfig
from ci_pipeline.config.sources import CsvOptions
from ci_pipeline.config.unify import BIRTH_DATE_PARTS, NormalizeConfig, UnifyConfig
from ci_pipeline.errors import UserError
from ci_pipeline.ingest.csvfile import (
    END,
    FILE,
    LINE,
    START,
    bom_encoding,
    listed_lines,
    parse_csv,
    quoted_records,
    utf8_lines,
)
from ci_pipeline.ingest.date_sample import COMMON_DATE_FORMATS
from ci_pipeline.redact import redact
from ci_pipeline.unify.normalize import phone_region
from ci_pipeline.unify.probabilistic import SettingsError, TrainingError
from ci_pipeline.unify.probabilistic_method import train_from_tables
from ci_pipeline.unify.suggest import (
    IDENTIFIER,
    IDENTIFIER_OF_PERSON,
    LOOK_LIKE_SSN,
    customer_table_verdict,
    suggest_mapping,
)

#: The source every quick-start table belongs to.
SOURCE = "quickstart"
#: The generated key column when no column of the file identifies a row.
ROW_KEY = "row_number"
#: The key column of the customer table generated from a transaction file's customer ids. Not the id column's own
#: name: a custom attribute ``customer_id`` would become the profile's ``CustomerId`` column, which unification owns.
CUSTOMER_KEY = "customer_key"

#: A URL (``https://``, ``abfss://``): ``Path`` would fold its ``//`` into ``/``, and redaction no longer sees a URL.
URL = r"^[A-Za-z][A-Za-z0-9+.-]*://"
#: Names of keys: ``id``, ``order_id``, ``CustomerNumber``, ``uuid``.
KEY_NAME = r"(^|_)(id|key|uuid|guid|number|no|num|nr|code|ref)$"
#: Names of a transaction's customer reference: ``customer_id``, ``client_no``, ``member_number``, ``cust_id``.
CUSTOMER_REF_NAME = (
    r"(^|_)(customer|client|member|account|user|buyer|shopper|contact|patron|cust)s?_?(id|key|number|no|num|nr|ref)$"
)
#: Names of money amounts.
AMOUNT_NAME = r"(^|_)(amount|amt|total|price|revenue|value|spend|sales|sum|cost|paid|subtotal|net|gross)($|_)"
#: A number with a decimal comma, thousands maybe grouped by points (``1.262,15``), as in much of Europe.
DECIMAL_COMMA = r"-?(\d{1,3}(\.\d{3})+|\d+),\d+"
#: Names that say a column holds the date of a transaction.
#: A column marking returns (or refunds): ``is_return``, ``returned``, ``refund``.
RETURN_NAME = r"(^|_)(is_)?(return|returned|refund|refunded)($|_)"
DATE_NAME = r"(^|_)(date|time|timestamp|datetime|ts|dt|at|on|day)($|_)"
#: Rows a customer table needs for the probabilistic model to be the default: it learns from the pairs of records
#: that look alike, and a handful of rows holds too few (training on 1 or 5 rows stops with an error).
MODEL_ROWS = 100
#: Attributes the probabilistic model compares well; with three of them mapped it is the default method.
MODEL_FIELDS = {
    "first_name",
    "last_name",
    "full_name",
    "email",
    "phone",
    "birth_date",
    "birth_year",
    "postal_code",
    "street",
    "city",
}


#: The region phone numbers without a country code are read in unless the configuration says otherwise.
DEFAULT_REGION = NormalizeConfig.model_fields["default_region"].default
#: Why an identifier is left unmapped when the rows are numbered (``--row-key``).
ROW_KEY_IDENTIFIER = (
    f"an identifier, but not the primary key ({ROW_KEY} is, as no column identifies a row): left unmapped it is "
    "not on the profile; map it to 'custom' to keep it there"
)
#: Delimiters a CSV file's header is tried for, the comma first on a tie.
DELIMITERS = (",", ";", "\t", "|")
#: Why the written configuration sets each ``csv`` option.
CSV_REASONS = {
    "delimiter": "Values are separated by this character, not by commas",
    "multiline": "Quoted values of this file hold line breaks (multi-line addresses, notes): read them as values",
    "skip_initial_space": "Each delimiter is followed by a blank (a, b, c): the blank is not part of the value",
    "decimal": "Amounts are written with a decimal comma (262,15; points group thousands): read them so",
}

#: Why the written configuration sets ``csv.encoding`` to each encoding.
ENCODING_REASONS = {
    "cp1252": "The file is not UTF-8; it reads as Windows-1252 (spreadsheet exports are often written so)",
    "utf-16": 'The file is UTF-16: it begins with that byte-order mark (Excel\'s "Unicode text" is written so)',
    "utf-32": "The file is UTF-32: it begins with that byte-order mark",
}

#: Words YAML reads as booleans or null: quoted when they are names.
YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}


#: How the configuration's first line names each kind of table.
KIND_TEXT = {"customers": "a customer table", "transactions": "transactions"}
#: The closing note of a customer table's configuration.
NO_ACTIVITIES = [
    "",
    "# Measures and segments need activities (orders, visits, ...): add a transaction table under 'sources' and",
    "# 'activities', then measures such as {template: total_transaction_value, activity: orders} (docs/config/).",
]


@dataclass(frozen=True)
class KeyChoice:
    """The primary key found (``column``) or None, and why."""

    column: str | None
    reason: str


@dataclass(frozen=True)
class Transactions:
    """The columns that make a table a transaction table."""

    customer: str
    timestamp: str
    amount: str
    #: The amounts are written with a decimal comma (262,15): the table reads them with ``csv.decimal: ","``.
    decimal_comma: bool = False
    #: A true/false column marking returns (``is_return``): mapped as the activity's ``is_return`` field, so that
    #: counts and recency leave returns out (docs/config/measures.md).
    is_return: str | None = None


@dataclass(frozen=True)
class UnreadLine:
    """A line of a CSV file that ingestion will quarantine, as ingestion's parser found it."""

    line: int
    # "broken_quoting" (an unclosed quote), "column_count" (another number of fields than the header) or
    # "encoding" (a line not in UTF-8 in a file that is)
    kind: str
    raw: str


@dataclass
class Plan:
    """What the quick start will configure for one file."""

    path: Path
    table: str
    kind: str  # "customers" or "transactions"
    key: KeyChoice
    formats: dict[str, dict] = field(default_factory=dict)
    mapping: pd.DataFrame | None = None
    transactions: Transactions | None = None
    as_of: str | None = None
    as_of_reason: str = ""  # which date ``as_of`` is, for the configuration's comment
    customer_ids: pd.DataFrame | None = None
    csv: dict = field(default_factory=dict)  # a CSV file's ``csv`` options that differ from ingestion's defaults
    phone_region: tuple[str, float] | None = None  # the region of most numbers written with a country code
    rows: int = 0
    model_refused: str | None = None  # why the model could not be trained on the file (see ``trial_training``)
    unread: tuple[UnreadLine, ...] = ()  # lines left out of planning, which ingestion quarantines
    notes: list[str] = field(default_factory=list)  # what the user is told about the file as read


def local_path(argument: str) -> Path:
    """The quick start's file argument as a local path.

    Raises:
        UserError: the argument is a URL; the message names it with its password and signature masked.
    """
    if re.match(URL, argument):
        raise UserError(
            f"{redact(argument)} is a URL; quickstart takes a local file path. Download the file first, or write a "
            "configuration that reads it from the lake (docs/configuration.md)"
        )
    return Path(argument).expanduser()


def read_table(path: Path) -> pd.DataFrame:
    """The file as a frame of text (CSV) or of its own types (Parquet); empty cells are missing. A CSV file's
    ``csv`` options (see :func:`read_csv_file`) are in ``frame.attrs["csv"]``, the lines it leaves out in
    ``frame.attrs["unread"]``."""
    if path.is_dir():
        raise UserError(f"{path}: a folder; quickstart takes one CSV or Parquet file: give the path of one file in it")
    if not path.is_file():
        raise UserError(f"{path}: no such file (give a CSV or Parquet file)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame, options = read_csv_file(path)
            frame.attrs["csv"] = options
            return frame
        if suffix in {".parquet", ".pq"}:
            return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: cannot be read as {suffix[1:]}: {exc}") from None
    raise UserError(f"{path}: unsupported file type {suffix or '(none)'}; give a .csv or .parquet file")


def read_csv_file(path: Path) -> tuple[pd.DataFrame, dict]:
    """A CSV file as text, and the ``csv`` options ingestion needs to read it as this does (those that differ from
    the defaults): its encoding when not UTF-8 (the UTF-16 or UTF-32 its byte-order mark names, or Windows-1252,
    as spreadsheet exports in Western Europe are written), its delimiter when not a comma (``;`` where the comma
    is the decimal mark, tab, ``|``) and ``multiline`` when quoted values really hold line breaks (see
    :func:`quoted_records`) and ``skip_initial_space`` when every delimiter is followed by a blank
    (:func:`_blank_after_delimiters`).

    The file is parsed by ingestion's own parser (:func:`~ci_pipeline.ingest.csvfile.parse_csv`), so the frame
    holds the rows the run will accept as records, header names without the blanks around them (``id,
    given_name`` names ``given_name``). Lines that parser quarantines (an unclosed quote, another number of
    fields than the header) are left out and listed, as :class:`UnreadLine`, in ``frame.attrs["unread"]``: the
    quick start plans from the rest, and the run's quarantine holds them with their reasons.
    """
    data = path.read_bytes()
    options: dict = {}
    text, encoding = _decoded(path, data)
    if encoding:
        options["encoding"] = encoding
    delimiter = _delimiter(text)
    if delimiter != ",":
        options["delimiter"] = delimiter
    skip = _blank_after_delimiters(text, delimiter)
    if skip:
        options["skip_initial_space"] = True
    _refuse_data_as_header(path, text, delimiter)
    read = CsvOptions(encoding=encoding or "utf-8", delimiter=delimiter, skip_initial_space=skip)
    parsed = parse_csv(data, read, str(path))
    if (parsed.broken["kind"] == "broken_quoting").any():
        quoted = quoted_records(data, read, str(path))
        if quoted is not None:
            parsed = quoted
            options["multiline"] = True
    frame = parsed.frame.drop(columns=[FILE, LINE, START, END]).replace(r"^\s*$", pd.NA, regex=True)
    frame.attrs["unread"] = tuple(
        UnreadLine(int(line), str(kind), str(raw))
        for line, kind, raw in parsed.broken[["line", "kind", "raw"]].itertuples(index=False)
    )
    return frame, options


#: A header cell that no header names a column by: an e-mail address, a date.
NO_NAME = r"[^@\s]+@[^@\s]+\.\w+|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"
#: A header cell that is a value, not a name: those, and a number (a year may head a column of a pivoted export).
VALUE_CELL = r"[-+]?\d+([.,]\d+)?|" + NO_NAME


def _refuse_data_as_header(path: Path, text: str, delimiter: str) -> None:
    """Refuse a file whose first line is a row of data (an export without a header): its values would be taken
    for column names, or an empty one refused as a nameless column.

    Raises:
        UserError: when a third or more of the first line's cells are numbers, e-mail addresses or dates, one of
            them an address or a date.
    """
    first = next(csv.reader([text.split("\n", 1)[0].strip("\ufeff\r")], delimiter=delimiter), [])
    values = [c.strip() for c in first if re.fullmatch(VALUE_CELL, c.strip())]
    unnamed = any(re.fullmatch(NO_NAME, v) for v in values)
    if first and unnamed and len(values) * 3 >= len(first):
        raise UserError(
            f"{path}: line 1 looks like a row of data, not a header ({', '.join(values[:3])}): add a first line "
            "naming the columns (quickstart reads them by their names), or write the configuration by hand with "
            "csv.header: false and the columns in order (docs/config/sources.md)"
        )


def _decoded(path: Path, data: bytes) -> tuple[str, str | None]:
    """The file as text, and its encoding when not UTF-8: the one its byte-order mark names (UTF-16 or UTF-32),
    else ``cp1252`` when it is not UTF-8 but reads as Windows-1252."""
    marked = bom_encoding(data)
    if marked:
        try:
            return data.decode(marked), marked
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{path}: the file begins with a {marked.upper()} byte-order mark but is not valid {marked.upper()} "
                f"({exc}); save it as UTF-8"
            ) from None
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        lines = utf8_lines(data)
        if lines.mostly_utf8:
            return lines.text.decode("utf-8"), None  # ingestion quarantines the other lines
        if lines.accented:
            line, byte = next(iter(lines.bad.items()))
            raise UserError(
                f"{path}: the file mixes two encodings: {lines.accented:,} line(s) are UTF-8 with accents and "
                f"{len(lines.bad):,} are not (line {line}: byte 0x{byte:02x}); read as either, the other's names "
                "would be garbled. Save the whole file as UTF-8"
            ) from None
        try:
            return data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            raise UserError(
                f"{path}: the file is neither UTF-8 ({exc}) nor Windows-1252; save it as UTF-8, or write its "
                "configuration by hand with csv.encoding set to its encoding (docs/config/sources.md)"
            ) from None


def _blank_after_delimiters(text: str, delimiter: str, lines: int = 50) -> bool:
    """Whether the file is written ``a, b, c``: in nine in ten of its first lines that hold a delimiter, each is
    followed by a blank (``csv.skip_initial_space``), so no value but a row's first keeps a leading blank."""
    sample = [line for line in text.splitlines()[: lines + 1] if delimiter in line]
    spaced = sum(line.count(delimiter) == line.count(delimiter + " ") for line in sample)
    return bool(sample) and delimiter != " " and spaced >= 0.9 * len(sample)


def _delimiter(text: str) -> str:
    """The delimiter of the header (the first non-blank line): the candidate it holds most often, a comma when it
    holds none (a file of one column)."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def table_name(path: Path) -> str:
    """The file's name as a table name (lower case, digits, ``_``, starting with a letter)."""
    name = _normalized(path.stem)
    return name if re.match(r"[a-z]", name) else f"t_{name}" if name else "table"


def infer_primary_key(frame: pd.DataFrame, exclude: frozenset[str] | set[str] = frozenset()) -> KeyChoice:
    """A column that is unique and never empty, a key-like name (``id``, ``order_id``) preferred.

    A column without a key-like name is accepted only when its values are neither decimals nor dates (a unique
    amount or timestamp identifies rows by accident). When no column fits, the reason names each key-like column
    and what is wrong with it.
    """
    rows = len(frame)
    problems: list[str] = []
    fallback: str | None = None
    for column in frame.columns:
        if column in exclude:
            continue
        values = frame[column]
        text = values.astype("string").str.strip()
        empty = int((values.isna() | (text == "")).sum())
        duplicated = int(text[text.notna() & (text != "")].duplicated().sum())
        key_like = re.search(KEY_NAME, _normalized(column)) is not None
        if empty == 0 and duplicated == 0 and rows:
            if key_like:
                return KeyChoice(str(column), f"{column} is unique and never empty, and its name says it is a key")
            if fallback is None and not _decimals_or_dates(text):
                fallback = str(column)
        elif key_like:
            what = [f"{duplicated:,} duplicate value(s)" if duplicated else "", f"{empty:,} empty" if empty else ""]
            problems.append(f"{column} has {' and '.join(w for w in what if w)}")
    if fallback is not None:
        return KeyChoice(fallback, f"{fallback} is unique and never empty (no column has a key-like name)")
    held = "; ".join(problems) if problems else "no column is unique and never empty"
    return KeyChoice(None, f"no column identifies a row: {held}")


def detect_transactions(frame: pd.DataFrame) -> tuple[Transactions | None, str]:
    """The customer id, date and amount columns of a transaction table, or None and what is missing."""
    names = {column: _normalized(column) for column in frame.columns}
    customer = next((c for c, n in names.items() if re.search(CUSTOMER_REF_NAME, n)), None)
    dated = [c for c in frame.columns if _is_date(frame[c])]
    timestamp = next((c for c in dated if re.search(DATE_NAME, names[c])), dated[0] if dated else None)
    named = [c for c, n in names.items() if re.search(AMOUNT_NAME, n) and not re.search(KEY_NAME, n)]
    amounts = [c for c in named if _numeric_share(frame[c]) >= 0.95]
    comma = [c for c in named if c not in amounts and _decimal_comma_share(frame[c]) >= 0.95]
    missing = [
        f"no {what}"
        for what, found in [
            ("customer id column (customer_id, client_no, ...)", customer),
            ("date column", timestamp),
            ("amount column (amount, total, price, ...)", amounts or comma),
        ]
        if not found
    ]
    if missing:
        return None, "it has " + ", ".join(missing)
    amount = (amounts or comma)[0]
    returns = next((str(c) for c, n in names.items() if re.search(RETURN_NAME, n) and _is_flag(frame[c])), None)
    return Transactions(str(customer), str(timestamp), str(amount), decimal_comma=not amounts, is_return=returns), ""


def _is_flag(values: pd.Series) -> bool:
    """Whether every present value reads as true or false (``True``, ``false``, ``1``, ``0``, ``yes``, ``no``)."""
    if pd.api.types.is_bool_dtype(values):
        return True
    text = values.dropna().astype("string").str.strip().str.lower()
    return bool(len(text)) and bool(text.isin(["true", "false", "1", "0", "yes", "no", "t", "f", "y", "n"]).all())


def plan_quickstart(path: Path, frame: pd.DataFrame, row_key: bool = False) -> Plan:
    """Decide what the file is and how to configure it.

    A file with a customer id, a date and an amount column holds transactions (an ``orders`` activity over a
    customer table of its distinct customer ids), unless it looks like a customer table
    (:func:`~ci_pipeline.unify.suggest.customer_table_verdict`) and has one row per customer id; a file without
    them must look like a customer table.

    Raises:
        UserError: the file is empty, is neither kind, or has no primary key and ``row_key`` is False.
    """
    if frame.empty:
        raise UserError(f"{path}: {no_rows(frame)}")
    transactions, missing = detect_transactions(frame)
    mapping = suggest_mapping(frame)
    verdict = customer_table_verdict(mapping)
    if transactions and verdict is None and _unique(frame[transactions.customer]):
        # One row per customer id, with names or contacts: a customer table with a sign-up date and a lifetime
        # value, not transactions.
        transactions = None
    if transactions is None and verdict:
        raise UserError(f"{path}: neither a customer table nor transactions: {verdict}; as transactions {missing}")
    exclude = {transactions.customer} if transactions else set()
    key = infer_primary_key(frame, exclude)
    if key.column is None:
        if not row_key:
            raise UserError(
                f"{path}: {key.reason}. Run again with --row-key to number the rows ({ROW_KEY}) and use that as "
                "the key: a copy of the file with that column is written to the output folder"
            )
        key = KeyChoice(ROW_KEY, f"{key.reason}; {ROW_KEY} numbers the rows in file order (--row-key)")
    plan = Plan(path, table_name(path), "transactions" if transactions else "customers", key, rows=len(frame))
    plan.csv = dict(frame.attrs.get("csv", {}))
    plan.unread = tuple(frame.attrs.get("unread", ()))
    plan.notes = unread_notes(plan.unread, len(frame.columns))
    if transactions:
        plan.transactions = transactions
        if transactions.decimal_comma:
            plan.csv["decimal"] = ","
        fmt = date_format(frame[transactions.timestamp])
        plan.formats = {
            transactions.timestamp: {"type": "datetime", **({"format": fmt} if fmt else {})},
            transactions.amount: {"type": "double"},
            **({transactions.is_return: {"type": "boolean"}} if transactions.is_return else {}),
        }
        dates = pd.to_datetime(frame[transactions.timestamp], format=fmt)
        plan.as_of, plan.as_of_reason = measures_as_of(dates, transactions.timestamp, path.name)
        ids = frame[transactions.customer].astype("string").str.strip().dropna()
        plan.customer_ids = pd.DataFrame({CUSTOMER_KEY: sorted(ids[ids != ""].unique())})
        if plan.table == "customers":
            plan.table = "transactions"
    else:
        plan.mapping = mapping[mapping["column"] != key.column]
        if key.column == ROW_KEY:
            # suggest_mapping says an identifier is "on the profile already" as the primary key; here the row
            # number is, so the id column would be lost unless mapped.
            said = plan.mapping["reason"] == IDENTIFIER
            plan.mapping = plan.mapping.assign(reason=plan.mapping["reason"].mask(said, ROW_KEY_IDENTIFIER))
        phones = plan.mapping.loc[plan.mapping["suggested"] == "phone", "column"]
        region = phone_region(frame[phones.iloc[0]]) if len(phones) else None
        plan.phone_region = region if region and region[0] != DEFAULT_REGION else None
        # Birth dates stay text: unification reads each column's format itself (day or month first as its values
        # show), while a typed column would quarantine the whole record over one unreadable or pre-1900 date.
        if _wants_model(plan):
            plan.model_refused = trial_training(plan, frame)
    return plan


def measures_as_of(dates: pd.Series, column: str, file: str) -> tuple[str, str]:
    """The day the measures' windows end on, the last of ``dates`` that a run today places, and which date that is
    (for the configuration's comment).

    A date in the future (a typo as 2066) would otherwise end the windows decades ahead, for a row the run then
    quarantines: every customer's recency would be that far off.
    """
    stamps = parse_timestamps(dates)  # UTC, as the activities stage reads them
    future = stamps > latest_accepted(pd.Timestamp.now(tz="UTC"), ActivitiesConfig().future_tolerance_hours)
    kept = dates[~future].max()
    if not future.any():
        return str(kept.date()), f"the last {column} in {file}"
    latest = dates[future].max().date()
    if pd.isna(kept):
        return str(pd.Timestamp.now().date()), f"today: every {column} in {file} is in the future (up to {latest})"
    return str(kept.date()), (
        f"the last {column} in {file} that is not in the future; {int(future.sum())} later row(s), up to {latest}, "
        "are quarantined by the run as in the future (activities.future_tolerance_hours)"
    )


def no_rows(frame: pd.DataFrame) -> str:
    """Why the file gave no rows: it has none, or every line was left out (``frame.attrs["unread"]``), most often
    for one cause in the header: a title above it, names cut by a line break, trailing delimiters on every row."""
    unread = frame.attrs.get("unread", ())
    if not unread:
        return "the file has no rows"
    header = len(frame.columns)
    if any(u.kind != "column_count" for u in unread):
        return f"none of its {len(unread):,} lines reads as a row: " + "; ".join(unread_notes(unread, header))
    delimiter = frame.attrs.get("csv", {}).get("delimiter", ",")
    rows = [next(csv.reader([u.raw], delimiter=delimiter), []) for u in unread]
    fields = pd.Series([len(r) for r in rows]).value_counts()
    most = int(fields.index[0])
    share = "every one of the {:,} lines has" if len(fields) == 1 else "most of the {:,} lines have"
    said = f"{share.format(len(unread))} {most} fields where the header (line 1) has {header}"
    if header == 1:
        return f"{said}: a title above the header? Delete the lines above the header so that it is the first line"
    if most > header and all(not "".join(r[header:]).strip() for r in rows):
        return (
            f"{said}, the last {most - header} empty in every line: delete the trailing delimiters "
            f"('{delimiter * (most - header)}' at the end of each line), or name those columns in the header"
        )
    return (
        f"{said} (names: {', '.join(map(str, frame.columns))}): fix the header line (a line break inside a quoted "
        "name cuts it short) or the delimiter"
    )


def unread_notes(unread: tuple[UnreadLine, ...], fields: int) -> list[str]:
    """What the user is told of the lines left out of planning (``fields``: the header's count): one line per
    problem, with the first line numbers, each saying that the run quarantines them."""
    notes = []
    for kind, what, then in [
        ("broken_quoting", "hold an unclosed quote", "(set csv.multiline: true only if values really span lines)"),
        ("column_count", f"have another number of fields than the header's {fields}", "(fix them in the file)"),
        ("encoding", "are not UTF-8 as the rest of the file is", "(save them as UTF-8)"),
    ]:
        lines = [u.line for u in unread if u.kind == kind]
        if lines:
            notes.append(
                f"csv: {len(lines):,} line(s) {what} ({listed_lines(lines)}); quickstart planned without them and "
                f"ingestion quarantines them {then}"
            )
    return notes


def _model_types(plan: Plan) -> set[str]:
    """The attributes mapped that the model compares well (a birth date in three parts, or a year and month, is
    compared as one date)."""
    suggested = set(plan.mapping.loc[plan.mapping["suggested"] != "", "suggested"])
    joined = set(BIRTH_DATE_PARTS[:2]) <= suggested
    return {"birth_date" if joined and t in BIRTH_DATE_PARTS else t for t in suggested} & MODEL_FIELDS


def _wants_model(plan: Plan) -> bool:
    return len(_model_types(plan)) >= 3 and plan.rows >= MODEL_ROWS


def trial_training(plan: Plan, frame: pd.DataFrame) -> str | None:
    """Why the default probabilistic model cannot be trained on the file, or None when it can.

    The model is trained once here, as the first run would train it, on the file as read: a table already
    deduplicated (a clean CRM export) holds no pairs of one person to learn from, and its first run would stop
    with that error; such a file gets simple rules instead, with the reason in the configuration.
    """
    unify = UnifyConfig.model_validate(yaml.safe_load(configuration_yaml(plan, plan.path.name))["unify"])
    if plan.key.column == ROW_KEY:
        frame = frame.assign(**{ROW_KEY: range(1, len(frame) + 1)})
    table = (SOURCE, plan.table)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the run itself reports training's notes
            model, _ = train_from_tables(unify, {table: frame}, {table: plan.key.column})
    except (TrainingError, SettingsError) as exc:
        return str(exc)
    # Trained, but on next to no duplicates: its few links would be its least certain; rules are safer.
    return model.training["few_duplicates"]


def date_format(values: pd.Series) -> str | None:
    """The first of :data:`~ci_pipeline.ingest.date_sample.COMMON_DATE_FORMATS` that reads every non-empty value,
    or None."""
    if pd.api.types.is_datetime64_any_dtype(values) or not (
        pd.api.types.is_string_dtype(values) or values.dtype == object
    ):
        return None
    text = values.dropna().astype("string").str.strip()
    if text.empty or not text.str.match(r"\d").all():
        return None
    for fmt in COMMON_DATE_FORMATS:
        if pd.to_datetime(text, format=fmt, errors="coerce").notna().all():
            return fmt
    return None


def write_files(plan: Plan, frame: pd.DataFrame, out: Path) -> Path:
    """Write the configuration (and the generated tables it reads) into ``out``; return the configuration's path.

    An existing configuration is kept unless it is the one this plan writes (running the quick start again on the
    same file is idempotent); a user's edits are never overwritten.
    """
    out.mkdir(parents=True, exist_ok=True)
    data = plan.path.resolve()
    if plan.key.column == ROW_KEY:
        data = out / "data" / f"{plan.table}{plan.path.suffix.lower()}"
        data.parent.mkdir(exist_ok=True)
        numbered = frame.copy()
        numbered.insert(0, ROW_KEY, range(1, len(frame) + 1))
        if data.suffix == ".csv":
            numbered.to_csv(data, index=False)
            if plan.unread:
                # Numbered after the rows and otherwise as they are, so still broken: the run quarantines them
                # from the copy as it would from the file. A line not in UTF-8 keeps its own bytes (its raw text
                # shows them escaped, which is valid UTF-8).
                original = plan.path.read_bytes().splitlines()
                with data.open("ab") as copy:
                    for i, u in enumerate(plan.unread, 1):
                        raw = original[u.line - 1] if u.kind == "encoding" else u.raw.encode("utf-8")
                        copy.write(f"{len(frame) + i},".encode() + raw + b"\n")
            # The copy is UTF-8 with commas: of the file's own options only multi-line values and the decimal mark
            # still apply.
            plan = replace(plan, csv={k: v for k, v in plan.csv.items() if k in ("multiline", "decimal")})
        else:
            numbered.to_parquet(data, index=False)
    if plan.customer_ids is not None:
        (out / "data").mkdir(exist_ok=True)
        plan.customer_ids.to_csv(out / "data" / "customers.csv", index=False)
    text = configuration_yaml(plan, _relative(data, out))
    config = out / "ci_pipeline.yaml"
    if config.exists() and config.read_text(encoding="utf-8") != text:
        raise UserError(
            f"{config} exists and differs from what the quick start writes (edited by hand?); it is kept. "
            "Choose another folder with --out, or delete the file to write it again"
        )
    config.write_text(text, encoding="utf-8")
    return config


def configuration_yaml(plan: Plan, data_path: str) -> str:
    """The commented configuration of ``plan``; ``data_path`` is the file's path as the configuration names it."""
    fmt = "csv" if data_path.lower().endswith(".csv") else "parquet"
    lines = [
        f"# Written by `ci-pipeline quickstart` from {plan.path.name}: {KIND_TEXT[plan.kind]}. Keep it, edit it, run",
        "# `ci-pipeline run --config <this file>` again; every choice below says why it was made.",
        "name: quickstart",
        "lake:",
        "  # The pipeline's tables (Parquet), in a folder next to this file.",
        "  url: lake",
        "",
        "sources:",
        f"  {SOURCE}:",
        "    # Who owns the data: replace with an e-mail address or team:<name>.",
        "    owner: team:quickstart",
        "    tables:",
        f"      {plan.table}:",
        f"        format: {fmt}",
        f"        path: {_q(data_path)}",
        f"        # {plan.key.reason}.",
        f"        primary_key: {_q(plan.key.column)}",
    ]
    lines += [f"        # {line}" for note in plan.notes for line in textwrap.wrap(note + ".", 108)]
    if plan.csv and fmt == "csv":
        lines += [
            f"        # {ENCODING_REASONS[v] if k == 'encoding' else CSV_REASONS[k]}." for k, v in plan.csv.items()
        ]
        lines.append("        csv: {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in plan.csv.items()) + "}")
    if plan.formats:
        lines.append(
            "        # Read as typed values (the format reads every value of the file); other columns stay text."
        )
        lines.append("        columns:")
        for column, spec in plan.formats.items():
            lines.append(f"          {_q(column)}: {_flow(spec)}")
    if plan.kind == "transactions":
        lines += _transactions_yaml(plan)
    else:
        lines += _customers_yaml(plan)
    return "\n".join(lines) + "\n"


def _customers_yaml(plan: Plan) -> list[str]:
    mapped = plan.mapping[plan.mapping["suggested"] != ""]
    unmapped = plan.mapping[plan.mapping["suggested"] == ""]
    lines = [
        "",
        "unify:",
        "  tables:",
        f"    - source: {SOURCE}",
        f"      table: {plan.table}",
        "      # Proposed by `suggest-mapping` from the column names and values: check each line.",
        "      columns:",
    ]
    lines += [f"        {_q(r.column)}: {r.suggested}  # {r.confidence}: {r.reason}" for r in mapped.itertuples()]
    for row in unmapped.itertuples():
        lines.append(f"        # {row.column} is left out: {row.reason}")
    types = _model_types(plan)
    listed = ", ".join(sorted(types)) or "none"
    if _wants_model(plan) and not plan.model_refused:
        return (
            lines
            + _normalize_yaml(plan)
            + [
                "  match:",
                f"    # {len(types)} comparable attributes are mapped: {listed}.",
                "    # A probabilistic model weighs the evidence of every one, learnt from the data without labels",
                "    # (docs/matching-probabilistic.md).",
                "    # Comparisons and blocking are chosen from the mapped types; the first run trains the model and",
                "    # keeps it in the lake, later runs score with it; materialize unify/match_model to retrain it.",
                "    method: probabilistic",
                *NO_ACTIVITIES,
            ]
        )
    rules = _simple_rules(types, _person_identifiers(plan))
    if plan.model_refused:
        said = f"A probabilistic model could not be trained on this file (quickstart tried): {plan.model_refused}."
        said += " Once the data holds duplicates, set match: {method: probabilistic} to train one. Until then, "
        said += (
            "duplicates are found by simple rules (docs/config/unify.md)."
            if rules
            else "every row is a customer of its own: no mapped attribute identifies a person on its own."
        )
        lines += [f"      # {line}" for line in textwrap.wrap(said, 108)]
    elif len(types) >= 3:
        lines.append(
            f"      # The file has only {plan.rows} row(s): too few for a probabilistic model to learn from (it "
            f"needs {MODEL_ROWS} or more),"
        )
    else:
        lines.append(
            f"      # Only {len(types)} comparable attribute(s) are mapped: {listed}. Too few for a probabilistic "
            "model,"
        )
    if not rules:
        if not plan.model_refused:
            lines.append("      # and none identifies a person on its own: every row is a customer of its own.")
        return lines + _normalize_yaml(plan) + NO_ACTIVITIES
    if not plan.model_refused:
        lines.append("      # so duplicates are found by simple rules (docs/config/unify.md).")
    lines += [
        "      dedup:",
        "        rules:",
    ]
    for name, conditions in rules:
        if name.endswith("_and_city"):
            lines.append("          # A name and a town: namesakes living in one large town would be merged too.")
        lines += [f"          - name: {name}", "            conditions:"]
        lines += [f"              - {_flow(c)}" for c in conditions]
    return lines + _normalize_yaml(plan) + NO_ACTIVITIES


def _normalize_yaml(plan: Plan) -> list[str]:
    """``unify.normalize`` when the phone numbers say their region (see :func:`phone_region`)."""
    if not plan.phone_region:
        return []
    region, share = plan.phone_region
    return [
        "  normalize:",
        f"    # {share:.0%} of the phone numbers written with a country code are {region} numbers: those written",
        f"    # without one are read as {region} numbers too, so both ways of writing one number match.",
        f"    default_region: {region}",
    ]


def _person_identifiers(plan: Plan) -> list[str]:
    """The columns kept as ``custom`` because they identify the person (a social security or passport number)."""
    mapped = plan.mapping
    if mapped is None:
        return []
    found = (mapped["suggested"] == "custom") & mapped["reason"].str.startswith(IDENTIFIER_OF_PERSON)
    found |= (mapped["suggested"] == "custom") & mapped["reason"].str.contains(LOOK_LIKE_SSN)
    return mapped.loc[found, "column"].astype(str).tolist()


def _simple_rules(types: set[str], identifiers: list[str] = ()) -> list[tuple[str, list[dict]]]:
    """Rules of one identifying attribute each (a person's own number first, then e-mail and phone), with the name
    agreeing where a name is mapped; without those, a birth date or postal code with the whole name (the first and
    last name where both are mapped: many people of one first name share a birthday in a register of thousands),
    and only where neither is mapped, the street, else the town, with the whole name (a file of names and towns:
    its exact repeats are one person, while namesakes of one large town are merged too, as the configuration says
    beside the rule)."""
    name = next((t for t in ("first_name", "full_name", "last_name") if t in types), None)
    agree = [{"field": name, "precision": "high"}] if name else []
    rules = [(f"same_{_normalized(c)}", [{"field": c}, *agree]) for c in identifiers]
    rules += [(f"same_{field}", [{"field": field}, *agree]) for field in ("email", "phone") if field in types]
    if not rules and name:
        names = ["first_name", "last_name"] if {"first_name", "last_name"} <= types else [name]
        whole = [{"field": n, "precision": "high"} for n in names]
        # The street or town only where neither a birth date nor a postal code is mapped: beside them, the name
        # at one street joined a census's namesakes of one household (a father and his son), 4 true pairs and 21
        # false, where the birth date and postal code rules alone found the 4 and no other.
        places = [f for f in ("birth_date", "postal_code") if f in types] or [
            f for f in ("street", "city") if f in types
        ][:1]
        rules += [(f"{'_'.join(names)}_and_{f}", [{"field": f}, *whole]) for f in places]
    return rules


def _transactions_yaml(plan: Plan) -> list[str]:
    t = plan.transactions
    returns = f", is_return: {_q(t.is_return)}" if t.is_return else ""
    # Returns are rows of their own: not orders, not the latest purchase (docs/config/measures.md's filter).
    bought = ", where: [{field: is_return, op: '=', value: false}]" if t.is_return else ""
    return [
        "      customers:",
        "        format: csv",
        "        path: data/customers.csv",
        f"        # One row per distinct {t.customer} of {plan.path.name}: the customers the transactions belong to.",
        f"        primary_key: {CUSTOMER_KEY}",
        "",
        "unify:",
        "  tables:",
        f"    - source: {SOURCE}",
        "      table: customers",
        f"      # Each {t.customer} is one customer: nothing else is known of them, so there is nothing to match on.",
        "      # Add a customer table (name, e-mail, ...) here to deduplicate and enrich the profiles.",
        "      columns:",
        f"        {CUSTOMER_KEY}: custom",
        "      # One record per customer by construction: the run does not warn that no rule compares its records.",
        "      one_customer_per_record: true",
        "",
        "activities:",
        "  tables:",
        "    orders:",
        f"      # The rows of {plan.path.name}: {t.timestamp} dates them, {t.amount} is the amount.",
        f"      source: {SOURCE}",
        f"      table: {plan.table}",
        "      type: SalesOrder",
        f"      timestamp: {_q(t.timestamp)}",
        f"      fields: {{amount: {_q(t.amount)}{returns}}}",
        f"      customer: {{source: {SOURCE}, table: customers, column: {_q(t.customer)}}}",
        "",
        "measures:",
        *_as_of_comment(plan),
        f"  as_of: {plan.as_of}",
        "  attributes:",
        *(
            [f"    # A row of {t.is_return} true is a return: spend nets it, counts and recency leave it out."]
            if t.is_return
            else []
        ),
        "    total_spend: {template: total_transaction_value, activity: orders}",
        f"    order_count: {{template: transaction_count, activity: orders{bought}}}",
        "    average_order_value: {expression: total_spend / order_count}",
        f"    days_since_last_purchase: {{template: days_since_last_purchase, activity: orders{bought}}}",
        "    # Recency, frequency and monetary scores (1-5) that the RFM segments below read.",
        f"    rfm_recency_score: {{template: rfm_recency_score, activity: orders{bought}}}",
        f"    rfm_frequency_score: {{template: rfm_frequency_score, activity: orders{bought}}}",
        "    rfm_monetary_score: {template: rfm_monetary_score, activity: orders}",
        "  business:",
        "    total_revenue: {activity: orders, aggregate: sum, field: amount}",
        "    average_customer_spend: {of_measure: total_spend, aggregate: average}",
        "",
        "segments:",
        "  # The suggested RFM segments (docs/config/segments.md).",
        "  definitions:",
        "    rfm_champions: {template: rfm_champions}",
        "    rfm_loyal: {template: rfm_loyal}",
        "    rfm_at_risk: {template: rfm_at_risk}",
        "    rfm_hibernating: {template: rfm_hibernating}",
        "    rfm_new: {template: rfm_new}",
    ]


def _as_of_comment(plan: Plan) -> list[str]:
    """Which date ends the measures' windows, and why that one."""
    said = f"Windows end on {plan.as_of}, so the results do not change from day to day: {plan.as_of_reason}."
    return [f"  # {line}" for line in textwrap.wrap(said, 112, break_on_hyphens=False)]


def _normalized(name: object) -> str:
    """``OrderDate`` / ``Order Date`` -> ``order_date``."""
    text = re.sub(r"([a-z])([A-Z])", r"\1_\2", str(name))
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _unique(values: pd.Series) -> bool:
    text = values.astype("string").str.strip()
    return bool(text.notna().all() and (text != "").all() and not text.duplicated().any())


def _is_date(values: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(values) or date_format(values) is not None


def _decimals_or_dates(text: pd.Series) -> bool:
    return bool(text.str.fullmatch(r"-?\d+\.\d+").mean() > 0.5 or date_format(text) is not None)


def _numeric_share(values: pd.Series) -> float:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return 1.0
    text = values.dropna().astype("string").str.strip()
    return float(pd.to_numeric(text, errors="coerce").notna().mean()) if len(text) else 0.0


def _decimal_comma_share(values: pd.Series) -> float:
    """The share of the values written with a decimal comma: ``262,15``, ``1.262,15``, ``-3,5``."""
    text = values.dropna().astype("string").str.strip()
    return float(text.str.fullmatch(DECIMAL_COMMA).mean()) if len(text) else 0.0


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to the configuration's folder when it can be, else absolute (another drive)."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _q(text: str) -> str:
    """A YAML scalar: plain when safe, else double-quoted (JSON strings are valid YAML)."""
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", text) and text.lower() not in YAML_WORDS
    return text if plain else json.dumps(text)


def _flow(mapping: dict) -> str:
    return "{" + ", ".join(f"{k}: {_q(str(v))}" for k, v in mapping.items()) + "}"
