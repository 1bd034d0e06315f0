"""Declared column types: turn text (or loosely typed source values) into proper pandas dtypes.

The dtypes: string -> ``string``; int64 -> ``Int64``; double and decimal -> ``float64``; boolean -> ``boolean``;
datetime -> ``datetime64[ns, UTC]`` (values without a zone are taken as UTC); date -> ``datetime64[ns]`` at
midnight (no zone; a calendar date is not an instant: a timestamp with a zone gives its date in that zone);
time -> ``string`` ``HH:MM:SS``; guid -> lower-case ``string``; json -> ``string`` holding valid JSON. A value that
does not parse is a malformed value: the row is quarantined with the column, the value and the expected type. So
is a value that parses but cannot be held faithfully: an integer past the int64 range (never wrapped or rounded),
a number that is not finite (NaN unless the column allows it), a date outside the accepted range.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.arrays import FLOAT_EXACT, as_text
from ci_pipeline.config.sources import DateRange

STRING = pd.StringDtype()
UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_GUID = r"^\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?$"
_TIME_FORMATS = ["%H:%M:%S", "%H:%M", "%H:%M:%S.%f"]


def date_bounds(date_range: DateRange) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first, end) of a configured date range: its ``min`` at midnight to the day after its ``max``."""
    return pd.Timestamp(date_range.min), pd.Timestamp(date_range.max) + pd.Timedelta(days=1)


#: The accepted dates when a caller states none (the configuration's default ``date_range``).
DEFAULT_RANGE = date_bounds(DateRange())
_INT64 = np.iinfo(np.int64)


def source_kind(series: pd.Series) -> str | None:
    """The declared type a column typed by its source (Parquet, Delta) is checked as, or None for other dtypes.

    Source-typed numbers and timestamps get the same checks as declared ones: an integer past the int64 range, a
    non-finite float or a timestamp outside the accepted dates would otherwise pass unchecked or crash.
    """
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_integer_dtype(dtype):
        return "int64"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "date" if _local_midnights(series) else "datetime"
    return None


def _local_midnights(series: pd.Series) -> bool:
    """Whether a column of timestamps in a zone other than UTC holds only midnights there: calendar dates written
    as timestamps (a birth date at 00:00 Europe/Berlin), whose date in UTC is the day before."""
    if not isinstance(series.dtype, pd.DatetimeTZDtype) or str(series.dt.tz) == "UTC":
        return False
    present = series.dropna()
    return len(present) > 0 and bool((present == present.dt.normalize()).all())


def normalise(series: pd.Series) -> pd.Series:
    """The stable dtype of an undeclared column that :func:`source_kind` leaves alone: text as ``string``,
    booleans as ``boolean``."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean")
    if pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        return _as_text(series)
    return series


#: The currency symbols of Unicode (category Sc): $, €, £, ¥, ₹, ₽, ... and their full-width forms.
_CURRENCY = (
    "[$\u00a2-\u00a5\u058f\u060b\u07fe\u07ff\u09f2\u09f3\u09fb\u0af1\u0bf9\u0e3f\u17db\u20a0-\u20c0"
    "\ua838\ufdfc\ufe69\uff04\uffe0\uffe1\uffe5\uffe6]"
)


def _currency_symbols(text: pd.Series, kind: str, marks: tuple[str, str | None]) -> pd.Series:
    """The hint for numbers written with a currency symbol (``€ 19,99``, ``$12.50``, ``12,50 €``; empty where
    there is none): no setting strips it, so the fix is at the source or a text column. The number without the
    symbol gets its own hint too (a decimal comma the table does not read)."""
    out = pd.Series("", index=text.index, dtype=STRING)
    symbol = text.str.extract(f"({_CURRENCY})", expand=False)
    has = symbol.notna()
    if not has.any():
        return out
    bare = text[has].str.replace(_CURRENCY, "", regex=True).str.strip()
    also = _number_marks(bare, kind, marks).str.replace(r"^ \((.*)\)$", r"; the number itself: \1", regex=True)
    out[has] = (
        " (written with the currency symbol '" + symbol[has] + "': no setting reads it; remove it from the column at "
        "the source, or declare the column as text (string) and keep the currency in a column of its own" + also + ")"
    )
    return out


def _number_marks(text: pd.Series, kind: str, marks: tuple[str, str | None]) -> pd.Series:
    """The hint for numbers written with a decimal mark or thousands separator the table does not read (empty
    where none fits): ``1,234.56`` (a thousands comma), ``12,50`` or ``1.234,50`` (a decimal comma), and ``1,234``,
    which is either in a double column."""
    decimal, thousands = marks
    out = pd.Series("", index=text.index, dtype=STRING)

    def matches(pattern: str) -> pd.Series:
        return text.str.fullmatch(pattern).fillna(False).astype(bool)

    us_grouped = matches(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?") & (thousands != ",")
    eu_grouped = matches(r"[+-]?\d{1,3}(\.\d{3})+(,\d+)?") & (thousands != ".")
    comma = matches(r"[+-]?\d+,\d+") & ~us_grouped
    set_thousands = " (written with {} between thousands? for a CSV file set csv.thousands: '{}' on the table)"
    set_decimal = " (written with a decimal comma? for a CSV file set csv.decimal: ',' on the table)"
    if kind == "int64" or decimal == ",":
        # No decimal comma fits: an int64 has no decimals, and a table reading decimal commas reads these.
        out[us_grouped] = set_thousands.format("commas", ",")
        if decimal == ",":
            out[us_grouped] = out[us_grouped].str.replace(" on the table", " and csv.decimal: '.' on the table")
        out[eu_grouped & ~us_grouped & (decimal == ",")] = set_thousands.format("points", ".")
        return out
    # 1,234.56 has both marks; 1,234 is 1234 with a thousands comma or 1.234 with a decimal one.
    out[us_grouped & text.str.contains(".", regex=False)] = set_thousands.format("commas", ",")
    out[us_grouped & ~text.str.contains(".", regex=False)] = (
        " (written with commas between thousands, or with a decimal comma? for a CSV file set csv.thousands: ',' "
        "or csv.decimal: ',' on the table, as the file writes its numbers)"
    )
    out[(comma | eu_grouped) & (out == "")] = set_decimal
    return out


def explain(
    values: pd.Series,
    kind: str,
    formats: list[str],
    date_range: tuple[pd.Timestamp, pd.Timestamp] = DEFAULT_RANGE,
    allow_nan: bool = False,
    marks: tuple[str, str | None] = (".", None),
    written: pd.Series | None = None,
) -> pd.Series:
    """Why some malformed values (as read) are not valid ``kind``: a suffix for the quarantine reason, empty when
    the value simply does not parse. Called on the malformed cells only. ``marks``: the table's decimal mark and
    thousands separator (CSV's ``csv.decimal`` and ``csv.thousands``), for the hint on numbers written with others;
    ``written``: the values as the file writes them, when ``values`` are those with the marks read."""
    text = _as_text(values).str.strip()
    out = pd.Series("", index=values.index, dtype=STRING)
    if kind in ("int64", "double", "decimal"):
        number = pd.to_numeric(text, errors="coerce").astype("float64")
        nan = text.str.fullmatch(r"[+-]?nan", case=False).fillna(False).astype(bool)
        infinite = np.isinf(number)
        out[nan | infinite] = " (not a finite number)"
        if kind == "int64":
            whole = text.str.fullmatch(r"[+-]?\d+(\.0*)?").fillna(False).astype(bool)
            whole |= np.isfinite(number) & (np.floor(number) == number)
            out[whole] = f" (outside the int64 range {_INT64.min}..{_INT64.max})"
            out[np.isfinite(number) & ~whole] = " (not a whole number)"
        elif not allow_nan:
            out[nan] = " (NaN is not a number; set allow_nan: true on the column to read it as missing)"
        # Said rather than "not a whole number" too: 1.234 in an int64 column of a table with decimal commas.
        as_written = text if written is None else _as_text(written).str.strip()
        hint = _currency_symbols(as_written, kind, marks)
        hint = hint.mask(hint.eq(""), _number_marks(as_written, kind, marks))
        told = hint.ne("") & out.isin(["", " (not a whole number)"])
        out[told] = hint[told]
    elif kind in ("date", "datetime"):
        last = (date_range[1] - pd.Timedelta(days=1)).date()
        outside = f" (outside the accepted dates {date_range[0].date()}..{last}; see date_range)"
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            out[:] = outside
        else:
            parses = pd.Series(False, index=values.index)
            for fmt in formats:
                parses |= pd.to_datetime(text, format=fmt, errors="coerce", utc=True).notna()
            out[parses] = outside
            out[~parses & _excel_serial(text, kind)] = (
                " (an Excel serial date number, days since 1899-12-30: 45000 is 2023-03-15; export the column as "
                "dates, for example yyyy-mm-dd, not as numbers)"
            )
    return out


def _excel_serial(text: pd.Series, kind: str) -> pd.Series:
    """Which values are Excel's serial numbers of days (with a fraction of a day for a datetime) of the years
    1927..2064, as a date column exported as numbers holds them."""
    pattern = r"\d{5}" if kind == "date" else r"\d{5}(\.\d+)?"
    number = pd.to_numeric(text.where(text.str.fullmatch(pattern).fillna(False).astype(bool)), errors="coerce")
    return number.between(10_000, 60_000).fillna(False).astype(bool)


def coerce(
    series: pd.Series,
    kind: str,
    formats: list[str],
    date_range: tuple[pd.Timestamp, pd.Timestamp] = DEFAULT_RANGE,
    allow_nan: bool = False,
    nan: pd.Series | None = None,
) -> tuple[pd.Series, pd.Series]:
    """Convert one column to its declared type.

    Args:
        series: the values as read.
        kind: the declared type (see the module docstring).
        formats: strptime formats tried in order for date, datetime and time text.
        date_range: [first, end) of the accepted dates and times (naive, read as UTC).
        allow_nan: double/decimal: NaN is a missing value rather than a malformed one.
        nan: for a float column read from Parquet/Delta, which cells held NaN (pandas cannot tell them from nulls).

    Returns:
        The converted column and a boolean mask of values that are present but malformed.
    """
    if kind == "string":
        return _as_text(series), pd.Series(False, index=series.index)
    if kind in ("datetime", "date") and pd.api.types.is_datetime64_any_dtype(series.dtype):
        inside = _within(series, date_range)
        kept = series.where(inside | series.isna())
        # A date is the calendar date where the timestamp was written, not in UTC.
        return (_as_date(kept) if kind == "date" else _to_utc(kept)), ~inside & series.notna()
    if kind in ("int64", "double", "decimal") and pd.api.types.is_numeric_dtype(series.dtype):
        nan = nan if nan is not None else pd.Series(False, index=series.index)
        if kind == "int64":
            out, bad = _typed_int(series)
            return out, bad | nan
        number = series.astype("float64")
        return number, (~np.isfinite(number) & number.notna()) | (nan & (not allow_nan))
    if kind == "boolean" and pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean"), pd.Series(False, index=series.index)

    text = _as_text(series).str.strip()
    text = text.mask(text == "")
    present = text.notna()
    if kind == "int64":
        out, bad = _text_int(text)
    elif kind in ("double", "decimal"):
        out = pd.to_numeric(text, errors="coerce").astype("float64")
        ok = np.isfinite(out)
        if allow_nan:
            ok |= text.str.fullmatch(r"[+-]?nan", case=False).fillna(False).astype(bool)
        bad = present & ~ok
        out = out.where(ok)
    elif kind == "boolean":
        lower = text.str.lower()
        out = pd.Series(pd.NA, index=text.index, dtype="boolean")
        out[lower.isin(_TRUE).fillna(False).astype(bool)] = True
        out[lower.isin(_FALSE).fillna(False).astype(bool)] = False
        bad = present & out.isna()
    elif kind in ("datetime", "date"):
        # A date is the day as written: its zone, if any, would move it to another day in UTC.
        out = parse_datetimes(text, formats, date_range, local_day=kind == "date")
        bad = present & out.isna()
        if kind == "date":
            out = _as_date(out)
    elif kind == "time":
        parsed = parse_datetimes(text, [f for f in formats if "%H" in f and "%d" not in f] or _TIME_FORMATS)
        out = parsed.dt.strftime("%H:%M:%S").astype(STRING)
        bad = present & parsed.isna()
    elif kind == "guid":
        ok = text.str.match(_GUID).fillna(False).astype(bool)
        out = text.str.strip("{}").str.replace("-", "", regex=False).str.lower()
        out = (
            out.str[:8] + "-" + out.str[8:12] + "-" + out.str[12:16] + "-" + out.str[16:20] + "-" + out.str[20:]
        ).where(ok)
        bad = present & ~ok
    elif kind == "json":
        unique = text.dropna().unique()
        valid = {v for v in unique if _is_json(v)}
        ok = text.isin(valid).fillna(False).astype(bool)
        out, bad = text.where(ok), present & ~ok
    else:  # pragma: no cover - the configuration model allows only the kinds above
        raise ValueError(kind)
    return out, bad.fillna(False).astype(bool)


#: The zone after a time of day (``...00:30:00+02:00``, ``...T12:00Z``); a date alone ends in none.
_ZONE = r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def parse_datetimes(
    text: pd.Series,
    formats: list[str],
    date_range: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    local_day: bool = False,
) -> pd.Series:
    """Parse text with each format in turn (the first that fits wins) into ``datetime64[ns, UTC]``.

    ``ISO8601`` and ``mixed`` are accepted as formats too (pandas' own parsers). A value outside ``date_range``
    ([first, end), naive = UTC) does not fit a format; without a range, a value outside what ``datetime64[ns]``
    holds does not. ``local_day``: a zone after the time of day is left out, so the day is the one written
    (``2026-06-01T00:30:00+02:00`` is the 1st, not the 31st of May in UTC).
    """
    first, end = date_range or (pd.Timestamp.min.ceil("D"), pd.Timestamp.max.floor("D"))
    first, end = first.tz_localize("UTC"), end.tz_localize("UTC")
    # Dates repeat a lot: parse each distinct text once and spread the results back.
    codes, uniques = pd.factorize(text)
    distinct = pd.Series(uniques, dtype=STRING)
    if local_day:
        distinct = distinct.str.replace(_ZONE, r"\1", regex=True)
    parsed_distinct = pd.Series(pd.NaT, index=distinct.index, dtype=UTC_NS)
    remaining = pd.Series(True, index=distinct.index)
    for fmt in formats:
        if not remaining.any():
            break
        parsed = pd.to_datetime(distinct[remaining], format=fmt, errors="coerce", utc=True)
        # Compared before the cast to nanoseconds, which cannot hold years such as 0001 or 9999.
        hit = parsed.index[parsed.notna() & (parsed >= first) & (parsed < end)]
        parsed_distinct[hit] = parsed[hit].astype(UTC_NS)
        remaining[hit] = False
    values = parsed_distinct.to_numpy(dtype="datetime64[ns]", na_value=np.datetime64("NaT"))
    spread = np.where(codes >= 0, values[np.maximum(codes, 0)], np.datetime64("NaT"))
    return pd.Series(spread, index=text.index).dt.tz_localize("UTC").astype(UTC_NS)


def _within(series: pd.Series, date_range: tuple[pd.Timestamp, pd.Timestamp]) -> pd.Series:
    first, end = date_range
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        first, end = first.tz_localize("UTC"), end.tz_localize("UTC")
    return ((series >= first) & (series < end)).fillna(False).astype(bool)


def _int_series(values: np.ndarray, missing: np.ndarray, index: pd.Index) -> pd.Series:
    return pd.Series(pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing), index=index)


def _typed_int(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """An integer or float column (Parquet, Delta) as ``Int64``; values int64 cannot hold exactly are malformed."""
    missing = series.isna().to_numpy()
    if pd.api.types.is_integer_dtype(series.dtype):
        if pd.api.types.is_signed_integer_dtype(series.dtype):
            return series.astype("Int64"), pd.Series(False, index=series.index)
        raw = series.to_numpy(dtype="uint64", na_value=0)
        bad = ~missing & (raw > np.uint64(_INT64.max))
        return _int_series(raw.astype(np.int64), missing | bad, series.index), pd.Series(bad, index=series.index)
    number = series.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        # 2**63 is exactly representable, so "< 2**63" excludes the first value past int64's maximum.
        ok = np.isfinite(number) & (np.floor(number) == number) & (number >= -(2.0**63)) & (number < 2.0**63)
    bad = ~missing & ~ok
    values = np.where(ok, number, 0).astype(np.int64)
    return _int_series(values, ~ok, series.index), pd.Series(bad, index=series.index)


def _text_int(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Trimmed text as ``Int64``. Plain digits (``007``, ``+5``, ``2.0``) are read exactly over the whole int64
    range, never through float64 (which rounds past 2**53); other notations (``1e3``) only where float64 is
    exact. Anything else, or past the range, is malformed."""
    present = text.notna().to_numpy()
    arrow = pa.array(text, type=pa.string())
    plain = pc.fill_null(pc.match_substring_regex(arrow, r"^[+-]?\d+(\.0*)?$"), False)
    negative = pc.fill_null(pc.starts_with(arrow, "-"), False)
    # Without sign, leading zeros and a zero fraction, the digits of equal-length numbers compare like the numbers.
    digits = pc.utf8_ltrim(pc.utf8_ltrim(pc.replace_substring_regex(arrow, r"\.0*$", ""), "+-"), "0")
    length = pc.fill_null(pc.utf8_length(digits), 0)
    limit = pc.if_else(negative, str(-_INT64.min), str(_INT64.max))
    fits = pc.or_(pc.less(length, 19), pc.and_(pc.equal(length, 19), pc.less_equal(digits, limit)))
    ok = pc.fill_null(pc.and_(plain, fits), False).to_numpy(zero_copy_only=False)
    values = np.zeros(len(text), dtype=np.int64)
    if ok.any():
        chosen = pc.filter(digits, pa.array(ok))
        magnitude = pc.cast(pc.if_else(pc.equal(chosen, ""), "0", chosen), pa.uint64()).to_numpy()
        # int64's minimum has no positive counterpart: negate in uint64, whose wrap-around gives the right bits.
        signed = np.where(negative.to_numpy(zero_copy_only=False)[ok], (~magnitude + np.uint64(1)), magnitude)
        values[ok] = signed.view(np.int64)
    other = present & ~plain.to_numpy(zero_copy_only=False)
    if other.any():
        number = pd.to_numeric(text[other], errors="coerce").astype("float64").to_numpy()
        with np.errstate(invalid="ignore"):
            # Integers written with a point or an exponent go through float64, which is exact only up to 2**53.
            fine = np.isfinite(number) & (np.floor(number) == number) & (np.abs(number) <= FLOAT_EXACT)
        where = np.flatnonzero(other)
        values[where[fine]] = number[fine].astype(np.int64)
        ok[where[fine]] = True
    return _int_series(values, ~ok, text.index), pd.Series(present & ~ok, index=text.index)


def _as_text(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.na_value is pd.NA:
        return series
    return as_text(series)


def _to_utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype(UTC_NS)
    return series.dt.tz_localize("UTC").astype(UTC_NS)


def _as_date(series: pd.Series) -> pd.Series:
    """The calendar date of each timestamp, in its own zone (a naive one as written)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_localize(None)
    return series.dt.normalize().astype("datetime64[ns]")


def _is_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


_NET_TOKENS = [
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("MMMM", "%B"),
    ("MMM", "%b"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("hh", "%I"),
    ("mm", "%M"),
    ("ss", "%S"),
    ("fffffff", "%f"),
    ("ffffff", "%f"),
    ("fff", "%f"),
    ("tt", "%p"),
    ("zzz", "%z"),
    ("M", "%m"),
    ("d", "%d"),
    ("H", "%H"),
    ("h", "%I"),
]
_NET_PATTERN = re.compile("|".join(re.escape(t) for t, _ in _NET_TOKENS) + "|'[^']*'")


def strptime_format(fmt: str) -> str:
    """A strptime format from a .NET/Java-style one (``MM/dd/yyyy HH:mm:ss``); strptime formats pass unchanged.

    CDM folders written by Microsoft tools state custom date formats in the .NET style.
    """
    if "%" in fmt or fmt in ("ISO8601", "mixed"):
        return fmt
    mapping = dict(_NET_TOKENS)

    def repl(match: re.Match) -> str:
        token = match.group(0)
        return token[1:-1] if token.startswith("'") else mapping[token]

    return _NET_PATTERN.sub(repl, fmt.replace("T", "T"))
