"""The record frame: every customer record of every unify table, one row each, with its mapped attributes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.arrays import as_text
from ci_pipeline.config.unify import DATE_TEXT_SUFFIX, UnifyConfig, UnifyTable, profile_name
from ci_pipeline.errors import UserError
from ci_pipeline.unify.dates import DateOrder, parse_times, read_birth_dates
from ci_pipeline.unify.text import re_extract, re_replace

#: Trailing initials and generational suffixes ("Smith Jr.", "Smith B."): not part of the last name.
SUFFIX = r"\s+(?:jr|sr|ii|iii|iv|[a-z])\.?$"
#: Titles written before a name ("Mr John Smith", "Dr. Jane Doe", "Sir Walter Scott"), one or more: not part of the
#: name, and shared by many people. Words that are also given names (Hon, Fr as a short form) are not among them.
TITLE = (
    r"^(?:(?:mr|mrs|ms|miss|mstr|master|dr|prof|professor|sir|dame|lord|lady|rev|revd|reverend|herr|frau|mme|mlle)"
    r"\.?(?:\s+|$))+"
)


#: What follows a comma after a whole name rather than a given name: "John Smith, Jr.", "Jane Doe, PhD",
#: "Thomas Clifford, 1st Baron Clifford of Chudleigh".
AFTER_NAME = (
    r"(?i)^\s*(?:jr|sr|ii|iii|iv|esq|phd|md|mba|dds|cpa|\d+(?:st|nd|rd|th)|baron|baroness|baronet|earl|count|"
    r"countess|duke|duchess|viscount|viscountess|marquess|marquis|lord|lady|sir|dame|king|queen|prince|princess|"
    r"bishop|archbishop)\b"
)
#: Words that belong to the last name they stand before ("Ludwig van Beethoven", "Maria de la Cruz").
PARTICLES = (
    "van",
    "von",
    "der",
    "den",
    "de",
    "del",
    "della",
    "da",
    "das",
    "dos",
    "di",
    "du",
    "la",
    "le",
    "ten",
    "ter",
    "st",
)


def given_name_first(names: pd.Series) -> pd.Series:
    """``"Smith, John"`` (last name first, as many systems write it) -> ``"John Smith"``; what follows a comma
    after a whole name of two words or more (``"John Smith, Jr."``, a title) is dropped; other names unchanged."""
    parts = re_extract(names, r"^([^,]*),(.*)$")
    # One word before the comma is a last name ("Jenson, Bishop" is Bishop Jenson): a whole name has two or more.
    whole = parts[0].str.strip().str.contains(r"\s", regex=True).fillna(False).astype(bool)
    after_name = whole & parts[1].str.contains(AFTER_NAME, regex=True).fillna(False).astype(bool)
    turned = (parts[1].str.strip() + " " + parts[0].str.strip()).where(~after_name, parts[0].str.strip())
    return turned.fillna(names).astype("string")


#: Columns every record frame has before its attributes.
BASE = ["source", "table", "key", "rank", "recency", "winner_time"]


def build_records(
    config: UnifyConfig,
    frames: dict[tuple[str, str], pd.DataFrame],
    keys: dict[tuple[str, str], str],
    extra_columns: dict[tuple[str, str], list[str]] | None = None,
    unreadable: dict[str, dict] | None = None,
    date_orders: dict[str, DateOrder] | None = None,
) -> pd.DataFrame:
    """Stack the customer tables into one frame (original values, as strings).

    Args:
        config: the unify section.
        frames: (source, table) -> the ingested table.
        keys: (source, table) -> its primary-key column.
        extra_columns: (source, table) -> unmapped columns that merge fields name as ``source.table.column``;
            each becomes a column of that name, empty on other tables' rows.
        unreadable: when given, filled with ``source.table.column`` -> ``{"values": n, "example": text}`` for each
            recency, winner or birth-date column holding values that are not dates unify can read (see
            :func:`parse_times`); those values count as missing. A birth date whose year, month and day were read
            but is no calendar date (month 81) is counted too, under ``"components"`` as well.
        date_orders: when given, filled with ``source.table.column`` -> how its year-last birth dates were read
            (:func:`~ci_pipeline.unify.dates.read_birth_dates`).

    Returns:
        One row per source record, in table order then key order: the :data:`BASE` columns (``source, table, key,
        rank, recency, winner_time``; the two times in UTC, missing where a table names no such column), then one
        column per attribute (semantic type or custom column name) and per ``source.table.column`` of
        ``extra_columns``, in the order the tables first hold them. A whole name and its first and last parts
        are each derived from the others where a record lacks them (see :func:`_derive_names`).

    Raises:
        UserError: a mapped, key or recency column is missing, or a key is empty or duplicated.
    """
    parts = []
    for rank, t in enumerate(config.tables):
        df = frames[(t.source, t.table)]
        key = keys[(t.source, t.table)]
        _check_columns(t, df, key)
        out = pd.DataFrame(
            {
                "source": pd.Series(t.source, index=df.index, dtype="string"),
                "table": pd.Series(t.table, index=df.index, dtype="string"),
                "key": df[key].astype("string"),
                "rank": rank,
                "recency": _to_time(t, df, t.recency_column, unreadable) if t.recency_column else pd.NaT,
                "winner_time": _to_time(t, df, t.dedup.winner.column, unreadable) if t.dedup.winner.column else pd.NaT,
            }
        )
        bad = out["key"].isna() | (out["key"].str.strip() == "")
        if bad.any():
            raise UserError(
                f"unify: {t.ref}: {int(bad.sum())} record(s) have an empty primary key {key!r}; ingestion should "
                f"have quarantined them; check sources.{t.source}.tables.{t.table}.primary_key"
            )
        dup = out["key"].duplicated()
        if dup.any():
            raise UserError(
                f"unify: {t.ref}: primary key {key!r} is not unique (e.g. {out['key'][dup].iloc[0]!r}); "
                "fix the key column or choose another primary_key"
            )
        date_parts = t.birth_date_parts()
        for attr, column in t.attributes().items():
            if attr == "birth_date" and date_parts:
                out[attr] = _birth_date_of_parts(t, df, date_parts, unreadable)
                continue
            if attr == "birth_year":
                out[attr] = _birth_years(t, df, column, unreadable)
                continue
            if attr in DATE_ATTRIBUTES:
                out[attr] = _birth_dates(t, df, column, unreadable, date_orders)
                continue
            # Without the blanks around it: an export's "Eva " is Eva on the profile (and "Eva Bell" its full name);
            # a phone stored as a double is 4155510033, not 4155510033.0.
            out[attr] = as_text(df[column]).str.strip()
        for column in (extra_columns or {}).get((t.source, t.table), []):
            if column not in df.columns:
                raise UserError(
                    f"unify.merge.fields: table {t.ref} has no column {column!r}; it has {list(df.columns)}"
                )
            out[f"{t.source}.{t.table}.{column}"] = df[column].astype("string")
        _derive_names(out)
        parts.append(out)
    records = pd.concat(parts, ignore_index=True, sort=False)
    records["recency"] = pd.to_datetime(records["recency"], utc=True)
    records["winner_time"] = pd.to_datetime(records["winner_time"], utc=True)
    for column in records.columns[len(BASE) :]:
        records[column] = records[column].astype("string")
    records = records.sort_values(["rank", "key"], kind="stable").reset_index(drop=True)
    return records


def _check_columns(t: UnifyTable, df: pd.DataFrame, key: str) -> None:
    wanted = {column: f"columns.{column}" for column in t.columns}
    wanted[key] = "primary key"
    if t.recency_column:
        wanted[t.recency_column] = "recency_column"
    if t.dedup.winner.column:
        wanted[t.dedup.winner.column] = "dedup.winner.column"
    missing = [f"{column!r} ({why})" for column, why in wanted.items() if column not in df.columns]
    if missing:
        raise UserError(
            f"unify: table {t.ref} has no column {', '.join(missing)}; it has {list(df.columns)}; fix the unify "
            "mapping or the source table"
        )


#: A birth date of which only the year, or the year and month, is known, as :func:`read_birth_dates` writes it.
PARTIAL_DATE = r"\d{4}-\d{2}-00"
#: Attributes read as dates (:func:`_birth_dates`; normalized as dates, see normalize.DEFAULTS).
DATE_ATTRIBUTES = frozenset({"birth_date"})


def typed_dates(profiles: pd.DataFrame) -> pd.DataFrame:
    """The profiles as published: each date attribute (``BirthDate``) typed as a date where unification read a whole
    calendar date, and missing otherwise; beside it ``<name>Text`` holds what it could not type, so that nothing
    is lost: a date known in part as ISO 8601 writes it (``1843``, ``1843-05``), text read as no date as written,
    and missing where the date is typed or no date is known.

    Unification compares the dates as text (``1843-00-00``: a part not known is ``00``); readers of the profile
    (BI tools, the sink, the exports) get a date column they can filter and compute ages with.
    """
    out = profiles
    for attribute in sorted(DATE_ATTRIBUTES):
        name = profile_name(attribute)
        if name not in profiles.columns:
            continue
        text = pa.array(profiles[name].astype("string").array).cast(pa.large_string())
        read = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True).cast(pa.date32())
        # strptime rolls a day the month does not have over into the next month (1980-02-30 -> 1980-03-01).
        whole = pc.fill_null(pc.equal(pc.strftime(read, format="%Y-%m-%d").cast(pa.large_string()), text), False)
        dates = pc.if_else(whole, read, pa.scalar(None, pa.date32()))
        rest = pc.if_else(whole, pa.scalar(None, pa.large_string()), text)
        rest = pc.replace_substring_regex(rest, r"^(\d{4})-00-00$", r"\1")
        rest = pc.replace_substring_regex(rest, r"^(\d{4}-\d{2})-00$", r"\1")
        if out is profiles:
            out = profiles.copy()
        out[name] = pd.Series(pd.arrays.ArrowExtensionArray(dates), index=profiles.index)
        at = out.columns.get_loc(name) + 1
        out.insert(
            at,
            name + DATE_TEXT_SUFFIX,
            pd.Series(rest.to_pandas(types_mapper=pd.ArrowDtype), index=profiles.index).astype("string"),
        )
    return out


def _to_time(t: UnifyTable, df: pd.DataFrame, column: str, unreadable: dict[str, dict] | None) -> pd.Series:
    times = parse_times(df[column])
    if unreadable is not None:
        _count_unreadable(t, df, column, times, unreadable)
    return times


def _count_unreadable(
    t: UnifyTable, df: pd.DataFrame, column: str, times: pd.Series, unreadable: dict[str, dict]
) -> None:
    """Note how many present values of ``column`` did not parse (as dates, or years: missing in ``times``), with
    one example."""
    # Only the values that did not parse are written as text: formatting a whole column of zoned timestamps
    # (a recency column) costs more than building the rest of the record frame.
    unparsed = (df[column].notna() & times.isna()).to_numpy(bool)
    if not unparsed.any():
        return
    text = df[column][unparsed].astype("string").str.strip()
    lost = text[text.str.len() > 0]
    if len(lost):
        unreadable[f"{t.ref}.{column}"] = {"values": len(lost), "example": str(lost.iloc[0])}


def whole_numbers(values: pd.Series, low: int, high: int, width: int) -> pd.Series:
    """Whole numbers from ``low`` to ``high`` written with at least ``width`` digits (``9``, ``09``, ``9.0`` as a
    spreadsheet exports it -> ``09``); missing where a value is no such number."""
    n = pd.to_numeric(values.astype("string").str.strip(), errors="coerce").astype("float64")
    n = n.where((n == n.round()) & (n >= low) & (n <= high))
    return n.astype("Int64").astype("string").str.zfill(width)


def join_birth_date(year: pd.Series, month: pd.Series, day: pd.Series | None = None) -> pd.Series:
    """Birth dates written ``YYYY-MM-DD`` from three columns of whole numbers (``1967``, ``9``, ``27``), or from a
    year and month (``1967-09-00``: a date known in part); missing where a part is missing or is no whole number in
    its range. A day the month does not have (February 30) is kept: the model compares year, month and day as
    written."""
    days = "00" if day is None else whole_numbers(day, 1, 31, 2)
    return whole_numbers(year, 1000, 9999, 4) + "-" + whole_numbers(month, 1, 12, 2) + "-" + days


def _birth_date_of_parts(
    t: UnifyTable, df: pd.DataFrame, parts: dict[str, str], unreadable: dict[str, dict] | None
) -> pd.Series:
    """The birth date joined from its columns (three, or a year and month); a record holding any part whose date is
    missing or not on the calendar is counted as unreadable under ``source.table.year/month/day``."""
    columns = [df[c] for c in parts.values()]
    joined = join_birth_date(*columns)
    if unreadable is not None:
        written = np.column_stack([(c.astype("string").str.strip().fillna("") != "").to_numpy(bool) for c in columns])
        read = parse_times(joined).notna() | joined.str.fullmatch(PARTIAL_DATE).fillna(False)
        bad = written.any(axis=1) & ~read.to_numpy(bool)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            entry = unreadable[f"{t.ref}.{'/'.join(parts.values())}"] = {
                "values": int(bad.sum()),
                "example": "/".join(c.astype("string").fillna("").iloc[first] for c in columns),
            }
            year = pd.to_numeric(columns[0].astype("string").str.strip(), errors="coerce").to_numpy()
            if short := int((bad & (year >= 0) & (year < 100)).sum()):
                entry["short_years"] = short
    return joined


def _birth_dates(
    t: UnifyTable,
    df: pd.DataFrame,
    column: str,
    unreadable: dict[str, dict] | None,
    date_orders: dict[str, DateOrder] | None,
) -> pd.Series:
    """The birth dates of ``column`` as ``YYYY-MM-DD`` text (see :func:`read_birth_dates`), noting how its year-last
    dates were read and which values are no calendar date."""
    dates, order = read_birth_dates(df[column])
    if order is not None and date_orders is not None:
        date_orders[f"{t.ref}.{column}"] = order
    if unreadable is not None:
        times = parse_times(dates)
        _count_unreadable(t, df, column, times, unreadable)
        entry = unreadable.get(f"{t.ref}.{column}")
        if entry is not None:
            lost = dates.notna() & times.isna()
            entry["components"] = int(dates[lost].str.fullmatch(r"\d{4}-\d{2}-\d{2}").sum())
            if partial := int(dates[lost].str.fullmatch(PARTIAL_DATE).sum()):
                entry["partial"] = partial
    return dates


def _birth_years(t: UnifyTable, df: pd.DataFrame, column: str, unreadable: dict[str, dict] | None) -> pd.Series:
    """A year of birth as four digits (``1967``, ``1967.0`` -> ``1967``); a value that is no year is missing and
    counted as unreadable under ``source.table.column``."""
    years = whole_numbers(df[column], 1000, 9999, 4)
    if unreadable is not None:
        _count_unreadable(t, df, column, years, unreadable)
    return years


def _derive_names(out: pd.DataFrame) -> None:
    """A whole name and its first and last parts, each from the others where a record lacks it: a parts column not
    mapped is taken whole from the whole names, and of a table mapping all three, a record holding only a whole name
    gets its parts and one holding only parts a whole name (systems that feed one table write one or the other)."""
    cols = out.columns
    if "full_name" not in cols and "first_name" not in cols and "last_name" not in cols:
        return
    empty = pd.Series(pd.NA, index=out.index, dtype="string")
    if "full_name" in cols:
        split = dict(zip(("first_name", "last_name"), split_full_name(out["full_name"]), strict=True))
        parts = {name: out[name] if name in cols else empty for name in split}
        only_whole = parts["first_name"].isna() & parts["last_name"].isna()
        for name, derived in split.items():
            out[name] = derived if name not in cols else parts[name].where(~only_whole, derived)
    first = out["first_name"] if "first_name" in out.columns else empty
    last = out["last_name"] if "last_name" in out.columns else empty
    built = (first.fillna("") + " " + last.fillna("")).str.strip()
    built = built.where(built.str.len() > 0)
    out["full_name"] = out["full_name"].fillna(built) if "full_name" in cols else built


def split_full_name(full: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The first and the last name of whole names: the first and the last word (the last only of two or more, with
    the particles before it: "van Wijk"), after turning "Smith, John" round and dropping titles before the name and
    initials and suffixes after it.

    A lone word is the name the column's other names hold it as more often: "Davies" where "Davies, Anna" is
    written, "Anna" where "Smith, Anna" is. A word they hold as neither (or as both alike) is a last name in a
    column that writes most names last name first ("Davies" without its given name), else the first name.
    """
    # trailing initials and generational suffixes ("Smith Jr.", "Smith B.") are not the last name
    written = re_replace(full.astype("string").str.strip(), SUFFIX, "", re.IGNORECASE)
    commas = int(written.str.contains(",", regex=False).fillna(False).sum())
    last_first = commas * 2 > int(written.notna().sum())
    full = re_replace(given_name_first(written).str.strip(), TITLE, "", re.IGNORECASE)
    # The first and the last of the words ``str.split()`` finds, extracted in Arrow: a list of Python words per
    # record costs most of the record frame at a million records.
    first = re_extract(full, r"^\s*(\S+)")[0].astype("string")
    particles = "|".join(PARTICLES)
    last = re_extract(full, rf"(?i)\S\s+((?:(?:{particles})\.?\s+)*\S+)\s*$")[0].astype("string")
    lone = first.notna() & last.isna()
    if lone.any():
        word = first[lone].str.casefold()
        whole = last.notna()
        as_first = word.map(first[whole].str.casefold().value_counts()).fillna(0).to_numpy()
        as_last = word.map(last[whole].str.casefold().value_counts()).fillna(0).to_numpy()
        moved = lone.copy()
        moved[lone] = (as_last > as_first) | ((as_last == as_first) & last_first)
        last, first = last.mask(moved, first), first.mask(moved)
    return first, last
