"""Types, keys and quarantine: every row read is either accepted or quarantined with a reason.

Also the light profile and schema-drift comparison that go into asset metadata.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import get_args

import numpy as np
import pandas as pd

from ci_pipeline.config.sources import ReasonKind, TableConfig
from ci_pipeline.errors import UserError
from ci_pipeline.ingest.csvfile import FILE, LINE, STRING
from ci_pipeline.ingest.read import NAN, OP, ORDER, Batch
from ci_pipeline.ingest.types import coerce, date_bounds, explain, normalise, source_kind

QUARANTINE_COLUMNS = ["source", "table", "file", "line", "key", "reason", "kind", "severity", "raw"]


@dataclass
class Checked:
    """The outcome of validating one batch."""

    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int
    #: Incremental layout only: versions superseded by a newer one and rows removed by a delete.
    rows_merged: int
    #: Values read as missing that may be real ones (:func:`null_words_like_values`).
    warnings: list[str] = field(default_factory=list)


def check_batch(batch: Batch, table: TableConfig, source: str, table_name: str, label: str) -> Checked:
    """Apply declared types, check the primary key, and split rows into accepted and quarantined.

    Args:
        batch: the rows as read.
        table: the table's configuration.
        source, table_name: for the quarantine's ``source``/``table`` columns.
        label: the configuration key of the table (``sources.crm.tables.contacts``) for messages.

    Raises:
        UserError: the primary key or a declared column is not in the data, or the table is empty.
    """
    frame = batch.frame
    key = table.primary_key
    _require_columns(batch, table, label)
    data, reasons, markers, warnings = _typed(batch, table, label)
    malformed = reasons.notna()
    kinds = pd.Series(pd.NA, index=frame.index, dtype=STRING)
    kinds[malformed] = "malformed_value"
    blank = _blank_keys(data, frame, reasons, markers, key, label, malformed)
    kinds[blank] = "missing_key"

    candidate = ~(malformed | blank)
    merged = 0
    if OP in frame.columns:
        keep = _newest_wins(data, frame, candidate, key, table)
        merged = int((candidate & ~keep).sum())
    else:
        duplicate = _duplicate_keys(data, frame, candidate, key, reasons)
        kinds[duplicate] = "duplicate_key"
        keep = candidate & ~duplicate

    accepted = data[keep]
    accepted = accepted.sort_values(key, kind="stable").reset_index(drop=True)
    quarantine = _quarantine(batch, data, reasons, kinds, table, source, table_name)
    if len(quarantine) == batch.rows_read > 0 and not table.allow_empty:
        raise UserError(_all_refused(batch, quarantine, label))
    return Checked(accepted, quarantine, rows_read=batch.rows_read, rows_merged=merged, warnings=warnings)


def _require_columns(batch: Batch, table: TableConfig, label: str) -> None:
    """Refuse a batch without the primary key or a declared column, or an empty one that may not be."""
    columns = batch.data_columns
    where = batch.files[0] if len(batch.files) == 1 else f"{len(batch.files)} files"
    key = table.primary_key
    if key not in columns:
        raise UserError(
            f"{where}: primary key column '{key}' ({label}.primary_key) is not in the data; the columns are "
            f"{', '.join(columns) or '(none)'}; fix primary_key"
        )
    missing = [c for c in table.columns if c not in columns]
    if missing:
        raise UserError(
            f"{where}: declared column(s) {', '.join(missing)} ({label}.columns) are not in the data; fix the "
            "column names or remove them"
        )
    if batch.rows_read == 0 and not table.allow_empty:
        raise UserError(
            f"{where}: the table has no rows ({label}); an empty export usually means a failed one: fix the source, "
            f"or set {label}.allow_empty: true if empty is expected"
        )


#: How many of the commonest reasons the message on a table whose every row was quarantined names.
REASONS_LISTED = 3


def _all_refused(batch: Batch, quarantine: pd.DataFrame, label: str) -> str:
    """The message for a table of which every row read was quarantined: loading none of them would empty every
    table built on it (unification would remove every customer) while the run looked successful."""
    where = batch.files[0] if len(batch.files) == 1 else f"{len(batch.files)} files"
    several = len(batch.files) > 1
    firsts = quarantine.groupby("reason", sort=False).agg(
        n=("line", "size"), file=("file", "first"), line=("line", "first")
    )
    firsts = firsts.sort_values("n", ascending=False, kind="stable").head(REASONS_LISTED)
    listed = "; ".join(
        f"'{reason}' ({row.n:,} row{'s' if row.n > 1 else ''}, e.g. {f'{row.file} ' if several else ''}line {row.line})"
        for reason, row in firsts.iterrows()
    )
    return (
        f"{where}: all {len(quarantine):,} rows read were quarantined and none accepted ({label}); the commonest "
        f"reasons: {listed}. An export whose every row is refused is a failed one or one whose layout changed, and "
        "loading it would empty every table built on it: fix the export (or this table's settings to its new "
        f"layout), or set {label}.allow_empty: true if a table with no accepted rows is expected"
    )


def _typed(batch: Batch, table: TableConfig, label: str) -> tuple[pd.DataFrame, pd.Series, pd.Series, list[str]]:
    """Every column in its declared (or the source's, or a detected) type: ``(data, reasons, key markers,
    warnings)``.

    ``reasons`` holds, per row, why its values are malformed (missing when none is); ``key markers`` tells the rows
    whose key was one of the table's null values; ``warnings``, the null values that look like a column's values.
    """
    frame = batch.frame
    typed = {}
    reasons = pd.Series(pd.NA, index=frame.index, dtype=STRING)
    markers = pd.Series(False, index=frame.index)
    warnings = []
    # A list the user wrote is their decision; the default list may hold a column's real values.
    judged = "null_values" not in table.model_fields_set
    for column in batch.data_columns:
        values, is_marker = _null_markers(frame[column], table.null_values)
        if column == table.primary_key:
            markers = is_marker
        elif judged and is_marker.any():
            warnings += null_words_like_values(frame[column], is_marker, f"{label}: column '{column}'", label)
        declared = table.columns.get(column)
        kind = declared.type if declared else batch.types.get(column) or source_kind(values)
        if kind is None:
            typed[column] = normalise(values)
            continue
        marks = (table.csv.decimal, table.csv.thousands) if table.format == "csv" else (".", None)
        if kind in ("int64", "double", "decimal") and marks[1]:
            values = without_thousands(values, marks[1])
        if kind in ("double", "decimal") and marks[0] == ",":
            values = decimal_point(values)
        own = declared.format if declared and declared.format else batch.formats.get(column)
        formats = ([own] if own else []) + list(table.date_formats)
        bounds = date_bounds(declared.date_range if declared and declared.date_range else table.date_range)
        allow_nan = bool(declared and declared.allow_nan)
        nan = frame[NAN + column].fillna(False).astype(bool) if NAN + column in frame.columns else None
        typed[column], bad = coerce(values, kind, formats, bounds, allow_nan, nan)
        if bad.any():
            # Through numpy's str, not pandas' string dtypes: those turn a NaN read from Parquet into a missing reason.
            cells = frame.loc[bad, column]
            shown = pd.Series(cells.to_numpy(dtype=object).astype(str), index=cells.index, dtype=STRING)
            shown = shown.str.slice(0, 80)
            why = explain(values[bad], kind, formats, bounds, allow_nan, marks, written=frame.loc[bad, column])
            message = f"malformed value in column '{column}': '" + shown + f"' is not a valid {kind}" + why
            reasons[bad] = (reasons[bad] + "; ").fillna("") + message
    return pd.DataFrame(typed, index=frame.index), reasons, markers, warnings


#: Known values of a column that its null words are judged against: fewer tell nothing of how it is written.
LIKE_VALUES_MIN = 5


def null_words_like_values(cells: pd.Series, hit: pd.Series, where: str, label: str) -> list[str]:
    """A warning per null word (of the ``hit`` cells of ``cells``) that is written as the column's known values
    are: letters in the same case, of a length they have. ``NA`` among country codes (Namibia) or ``Null`` among
    Title-case surnames is more likely a value than a gap, while ``NULL`` among mixed-case names or ``N/A`` anywhere
    is a gap; the warning says how to keep the word as a value."""
    text = cells.astype(STRING).str.strip()
    known = text[~hit & text.ne("").fillna(False).astype(bool)].drop_duplicates()
    if len(known) < LIKE_VALUES_MIN or known.str.fullmatch(WORDS).fillna(False).mean() < 0.9:
        return []
    lengths, cases = known.str.len(), _case(known)
    low, high = lengths.quantile(0.05), lengths.quantile(0.95)
    said = []
    for word, count in text[hit].value_counts().sort_index().items():
        alike = known[cases.eq(_case(pd.Series([word])).iloc[0])]
        if not word.isalpha() or not low <= len(word) <= high or len(alike) < len(known) / 2:
            continue
        said.append(
            f"{where}: {count:,} cell(s) '{word}' read as missing (one of the table's null_values), though the "
            f"column's values are written like it ('{alike.iloc[0]}'): if '{word}' is a value there (the country "
            f"code NA, the surname Null), set {label}.null_values to the words that mean missing in this table, "
            "without it"
        )
    return said


#: Words of letters, joined by a blank, hyphen, apostrophe or point (Mary-Ann, O'Brien, St. Louis).
WORDS = r"[^\W\d_]+(?:[ '\-.]+[^\W\d_]+)*\.?"


def _case(words: pd.Series) -> pd.Series:
    """How each word is written: ``upper``, ``title``, ``lower`` or ``mixed``."""
    cases = [words.str.isupper(), words.str.istitle(), words.str.islower()]
    held = [c.fillna(False).astype(bool) for c in cases]
    return pd.Series(np.select(held, ["upper", "title", "lower"], "mixed"), index=words.index)


def _blank_keys(
    data: pd.DataFrame,
    frame: pd.DataFrame,
    reasons: pd.Series,
    markers: pd.Series,
    key: str,
    label: str,
    malformed: pd.Series,
) -> pd.Series:
    """Rows without a primary key (strips the key's padding in ``data``; writes the reason)."""
    if isinstance(data[key].dtype, pd.StringDtype):
        # ' 42' and '42 ' are the key 42: padding is an export artefact, not a different customer.
        data[key] = data[key].str.strip()
    blank = data[key].isna()
    if isinstance(data[key].dtype, pd.StringDtype):
        blank |= data[key].eq("").fillna(True)
    blank &= ~malformed
    reasons[blank] = f"missing primary key '{key}'"
    said = blank & markers & frame[key].astype(STRING).str.strip().ne("").fillna(False).astype(bool)
    if said.any():
        reasons[said] = (
            f"missing primary key '{key}': '"
            + frame.loc[said, key].astype(STRING).str.strip()
            + f"' is one of the table's null_values ({label}.null_values)"
        )
    return blank


def _duplicate_keys(
    data: pd.DataFrame, frame: pd.DataFrame, candidate: pd.Series, key: str, reasons: pd.Series
) -> pd.Series:
    """Rows repeating an earlier row's key (full layout); the reason names where the key was first seen."""
    duplicate = candidate & data[key].where(candidate).duplicated(keep="first")
    if duplicate.any():
        first = pd.DataFrame({"k": data.loc[candidate, key], "f": frame.loc[candidate, FILE]})
        first["l"] = frame.loc[candidate, LINE].astype(STRING)
        seen = first.groupby("k", sort=False).first()
        dup_keys = data.loc[duplicate, key]
        where_first = seen.loc[dup_keys, "f"].to_numpy()
        line_first = seen.loc[dup_keys, "l"].to_numpy()
        reasons[duplicate] = (
            f"duplicate primary key '{key}' = '"
            + dup_keys.astype(STRING)
            + "' (first seen in "
            + pd.Series(where_first, index=dup_keys.index, dtype=STRING)
            + " line "
            + pd.Series(line_first, index=dup_keys.index, dtype=STRING)
            + ")"
        )
    return duplicate


def _quarantine(
    batch: Batch,
    data: pd.DataFrame,
    reasons: pd.Series,
    kinds: pd.Series,
    table: TableConfig,
    source: str,
    table_name: str,
) -> pd.DataFrame:
    """The quarantine (``QUARANTINE_COLUMNS``): rows that could not be read, then rows with a reason."""
    bad_rows = batch.frame[reasons.notna()]
    quarantined = pd.DataFrame(
        {
            "file": bad_rows[FILE].astype(STRING),
            "line": bad_rows[LINE].astype("Int64"),
            "key": data.loc[bad_rows.index, table.primary_key].astype(STRING),
            "reason": reasons[bad_rows.index],
            "kind": kinds[bad_rows.index],
            "raw": batch.raw_text(bad_rows),
        }
    )
    broken = batch.broken.assign(key=_broken_keys(batch, table))
    quarantine = pd.concat([broken, quarantined], ignore_index=True) if len(broken) else quarantined
    quarantine = quarantine.reset_index(drop=True)
    quarantine["source"] = pd.array([source] * len(quarantine), dtype=STRING)
    quarantine["table"] = pd.array([table_name] * len(quarantine), dtype=STRING)
    severities = {kind: table.severity(kind) for kind in get_args(ReasonKind)}
    quarantine["severity"] = quarantine["kind"].astype(object).map(severities).astype(STRING)
    quarantine = quarantine[QUARANTINE_COLUMNS].astype({c: STRING for c in QUARANTINE_COLUMNS if c != "line"})
    return quarantine.sort_values(["file", "line"], kind="stable").reset_index(drop=True)


def _broken_keys(batch: Batch, table: TableConfig) -> pd.Series:
    """The keys of rows that could not be split into columns: their first field when the key is the first column
    (as :func:`_blank_keys` reads a key), else missing."""
    broken = batch.broken
    if "first" not in broken.columns or batch.data_columns[:1] != [table.primary_key]:
        return pd.Series(pd.NA, index=broken.index, dtype=STRING)
    first = broken["first"].astype(STRING).str.strip()
    return first.mask(first.eq("").fillna(False).astype(bool) | first.isin(table.null_values))


def decimal_point(values: pd.Series) -> pd.Series:
    """Numbers written with a decimal comma (``1.262,15``, ``1 262,15``, ``-3,5``) as a decimal point writes them
    (``1262.15``): a point or blank between digits that groups three of them dropped, the comma made a point. A
    point that groups no thousands (``262.15``) is left a decimal point, never read as 26215; text that is no
    number stays what it was, and the type check says so."""
    if not isinstance(values.dtype, pd.StringDtype):
        return values
    grouped = values.str.replace(r"(?<=\d)[.\s\u00a0\u202f'](?=\d{3}(?:\D|$))", "", regex=True)
    return grouped.str.replace(",", ".", regex=False)


def without_thousands(values: pd.Series, mark: str) -> pd.Series:
    """Numbers with ``mark`` between groups of three digits (``1,234,567.5`` for ``,``) without it; a mark that
    groups no three digits (``1,23``) stays, and the type check refuses the value."""
    if not isinstance(values.dtype, pd.StringDtype):
        return values
    group = re.escape(mark) + r"\d{3}"
    grouped = values.str.strip().str.fullmatch(rf"[+-]?\d{{1,3}}(?:{group})+(?:[.,]\d*)?").fillna(False).astype(bool)
    return values.where(~grouped, values.str.replace(mark, "", regex=False))


def _null_markers(values: pd.Series, null_values: list[str]) -> tuple[pd.Series, pd.Series]:
    """Text cells equal to one of ``null_values`` (after trimming) become missing; also returns which were."""
    if not isinstance(values.dtype, pd.StringDtype) or not null_values:
        return values, pd.Series(False, index=values.index)
    hit = values.str.strip().isin(null_values).fillna(False).astype(bool)
    return values.mask(hit), hit


def _newest_wins(data: pd.DataFrame, frame: pd.DataFrame, candidate: pd.Series, key: str, table) -> pd.Series:
    """Keep the newest version of each key; a key whose newest version is a delete is dropped.

    Newest = latest ``last_modified`` (when configured), then the latest hour folder, then the later file and line.
    """
    column = table.incremental.last_modified if table.incremental else None
    order = pd.DataFrame(
        {
            "key": data[key],
            "modified": data[column] if column else 0,
            "order": frame[ORDER],
            "file": frame[FILE],
            "line": frame[LINE],
        }
    )[candidate]
    if column:
        # A delete without a timestamp takes effect at its hour folder's time.
        modified = order["modified"]
        if isinstance(modified.dtype, pd.DatetimeTZDtype):
            order["modified"] = modified.fillna(pd.to_datetime(order["order"], unit="s", utc=True))
    order = order.sort_values(["modified", "order", "file", "line"], kind="stable", na_position="first")
    newest = order.index[~order["key"].duplicated(keep="last")]
    keep = pd.Series(False, index=data.index)
    keep[newest] = True
    return keep & (frame[OP] != "delete")


#: The columns of :func:`profile`'s rows, in order.
PROFILE_COLUMNS = ("column", "type", "null %", "distinct", "top values", "min", "max")


def profile(frame: pd.DataFrame, top: int = 3) -> list[dict]:
    """One row per column (:data:`PROFILE_COLUMNS`): its type, null %, distinct count, top values and min/max."""
    rows = []
    total = len(frame)
    for column in frame.columns:
        values = frame[column]
        nulls = int(values.isna().sum())
        present = values.dropna()
        counts = present.value_counts()
        low = high = ""
        if len(present) and not pd.api.types.is_bool_dtype(values.dtype):
            low, high = _cell(present.min()), _cell(present.max())
        rows.append(
            {
                "column": str(column),
                "type": str(values.dtype),
                "null %": round(100 * nulls / total, 1) if total else 0.0,
                "distinct": int(len(counts)),
                "top values": ", ".join(f"{_cell(v)} ({n})" for v, n in counts.head(top).items()),
                "min": low,
                "max": high,
            }
        )
    return rows


def _cell(value) -> str:
    if isinstance(value, pd.Timestamp) and value.tz is None and value == value.normalize():
        value = value.date()  # a date column: midnight says nothing
    text = str(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def schema_of(frame: pd.DataFrame) -> dict[str, str]:
    """Column name -> dtype name, as kept between runs for drift detection."""
    return {c: str(frame[c].dtype) for c in frame.columns}


def drift(previous: dict[str, str] | None, current: dict[str, str], label: str) -> list[str]:
    """What changed in a table's schema since the last run, one message per column (empty when nothing did)."""
    if previous is None:
        return []
    messages = [f"{label}: column '{c}' appeared ({current[c]})" for c in current if c not in previous]
    messages += [f"{label}: column '{c}' disappeared (was {previous[c]})" for c in previous if c not in current]
    messages += [
        f"{label}: column '{c}' changed type from {previous[c]} to {current[c]}"
        for c in current
        if c in previous and previous[c] != current[c]
    ]
    return messages
