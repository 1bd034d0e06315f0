"""Declared column types: turn text (or loosely typed source values) into proper pandas dtypes.

The dtypes: string -> ``string``; int64 -> ``Int64``; double and decimal -> ``float64``; boolean -> ``boolean``;
datetime -> ``datetime64[ns, UTC]`` (values without a zone are taken as UTC); date -> ``datetime64[ns]`` at
midnight (no zone; a calendar date is not an instant); time -> ``string`` ``HH:MM:SS``; guid -> lower-case
``string``; json -> ``string`` holding valid JSON. A value that does not parse is a malformed value: the row is
quarantined with the column, the value and the expected type.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

STRING = pd.StringDtype()
UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_GUID = r"^\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?$"
_TIME_FORMATS = ["%H:%M:%S", "%H:%M", "%H:%M:%S.%f"]


def normalise(series: pd.Series) -> pd.Series:
    """The stable dtype of an undeclared column: text as ``string``, integers as ``Int64``, and so on."""
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series.dtype):
        return _to_utc(series)
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean")
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype("Int64")
    if pd.api.types.is_float_dtype(series.dtype):
        return series.astype("float64")
    if pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        return _as_text(series)
    return series


def coerce(series: pd.Series, kind: str, formats: list[str]) -> tuple[pd.Series, pd.Series]:
    """Convert one column to its declared type.

    Args:
        series: the values as read.
        kind: the declared type (see the module docstring).
        formats: strptime formats tried in order for date, datetime and time text.

    Returns:
        The converted column and a boolean mask of values that are present but malformed.
    """
    if kind == "string":
        return _as_text(series), pd.Series(False, index=series.index)
    if kind in ("datetime", "date") and pd.api.types.is_datetime64_any_dtype(series.dtype):
        out = _to_utc(series)
        return (_as_date(out) if kind == "date" else out), pd.Series(False, index=series.index)
    if kind in ("int64", "double", "decimal") and pd.api.types.is_numeric_dtype(series.dtype):
        return _numeric(series.astype("float64") if kind != "int64" else series, kind)
    if kind == "boolean" and pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean"), pd.Series(False, index=series.index)

    text = _as_text(series).str.strip()
    text = text.mask(text == "")
    present = text.notna()
    if kind in ("int64", "double", "decimal"):
        out, bad = _numeric(text, kind)
    elif kind == "boolean":
        lower = text.str.lower()
        out = pd.Series(pd.NA, index=text.index, dtype="boolean")
        out[lower.isin(_TRUE).fillna(False).astype(bool)] = True
        out[lower.isin(_FALSE).fillna(False).astype(bool)] = False
        bad = present & out.isna()
    elif kind in ("datetime", "date"):
        out = parse_datetimes(text, formats)
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


def parse_datetimes(text: pd.Series, formats: list[str]) -> pd.Series:
    """Parse text with each format in turn (the first that fits wins) into ``datetime64[ns, UTC]``.

    ``ISO8601`` and ``mixed`` are accepted as formats too (pandas' own parsers).
    """
    # Dates repeat a lot: parse each distinct text once and spread the results back.
    codes, uniques = pd.factorize(text)
    distinct = pd.Series(uniques, dtype=STRING)
    parsed_distinct = pd.Series(pd.NaT, index=distinct.index, dtype=UTC_NS)
    remaining = pd.Series(True, index=distinct.index)
    for fmt in formats:
        if not remaining.any():
            break
        parsed = pd.to_datetime(distinct[remaining], format=fmt, errors="coerce", utc=True)
        hit = parsed.index[parsed.notna()]
        parsed_distinct[hit] = parsed[hit].astype(UTC_NS)
        remaining[hit] = False
    values = parsed_distinct.to_numpy(dtype="datetime64[ns]", na_value=np.datetime64("NaT"))
    spread = np.where(codes >= 0, values[np.maximum(codes, 0)], np.datetime64("NaT"))
    return pd.Series(spread, index=text.index).dt.tz_localize("UTC").astype(UTC_NS)


def _numeric(values: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    number = pd.to_numeric(values, errors="coerce")
    number = number.astype("float64") if not pd.api.types.is_integer_dtype(number.dtype) else number
    present = values.notna()
    bad = present & number.isna()
    if kind != "int64":
        return number.astype("float64"), bad.fillna(False).astype(bool)
    if pd.api.types.is_integer_dtype(number.dtype):
        return number.astype("Int64"), bad.fillna(False).astype(bool)
    fractional = number.notna() & (np.floor(number) != number)
    out = number.where(~fractional).astype("Int64")
    if isinstance(values.dtype, pd.StringDtype):
        # Plain digit strings are converted exactly: going through float64 would round integers beyond 2**53.
        digits = values.str.fullmatch(r"[+-]?\d{1,18}").fillna(False).astype(bool)
        if digits.any():
            out[digits] = pd.array(values[digits].astype("int64"), dtype="Int64")
    return out, (bad | fractional).fillna(False).astype(bool)


def _as_text(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.na_value is pd.NA:
        return series
    return series.astype(STRING)


def _to_utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype(UTC_NS)
    return series.dt.tz_localize("UTC").astype(UTC_NS)


def _as_date(series: pd.Series) -> pd.Series:
    return series.dt.tz_localize(None).dt.normalize().astype("datetime64[ns]")


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
