"""Operators as vectorised masks over one column, with type checks that name the offending key."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from ci_pipeline.errors import UserError
from ci_pipeline.grammar.conditions import is_number, parse_period


def run_date(as_of: dt.date | str) -> dt.date:
    """The date measure windows end on: ``measures.as_of``, or today in UTC (read now) when it is ``today``."""
    return dt.datetime.now(dt.UTC).date() if as_of == "today" else as_of


def column_kind(values: pd.Series) -> str:
    """``date``, ``number``, ``boolean`` or ``text``."""
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return "date"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    return "text"


def period_start(end: pd.Timestamp, value) -> pd.Timestamp:
    """Start of ``in the last N days/weeks/months/years`` ending at ``end`` (exclusive end)."""
    count, unit = parse_period(value)
    if unit == "days":
        return end - pd.Timedelta(days=count)
    if unit == "weeks":
        return end - pd.Timedelta(weeks=count)
    if unit == "months":
        return end - pd.DateOffset(months=count)
    return end - pd.DateOffset(years=count)


def _as_timestamp(value, key: str, field: str) -> pd.Timestamp:
    if isinstance(value, bool) or not isinstance(value, str | dt.date | pd.Timestamp):
        raise UserError(f"{key}: {field} is a date but the value {value!r} is not; write it as YYYY-MM-DD")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise UserError(f"{key}: {field} is a date but the value {value!r} is not; write it as YYYY-MM-DD") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _coerce(value, kind: str, key: str, field: str):
    if kind == "date":
        return _as_timestamp(value, key, field)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{key}: {field} is a number but the value {value!r} is not; compare it with a number")
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise UserError(f"{key}: {field} is true/false but the value {value!r} is not; use true or false")
    if isinstance(value, dt.date):
        raise UserError(
            f"{key}: {field} is text but the value {value!r} is a date; compare it with text, or use a date field"
        )
    if isinstance(value, bool | list | dict):
        raise UserError(f"{key}: {field} is text but the value {value!r} is not")
    return str(value)


#: Operators that order values: on text they would order it as text ("Gold" > "5").
_ORDERING = ("<", "<=", ">", ">=", "between")


def as_numbers(values: pd.Series) -> tuple[pd.Series, object]:
    """``values`` as float numbers, and the first known value that is no number (None when every one is)."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    text = values.notna() & numbers.isna()
    return numbers, (values[text].iloc[0] if text.any() else None)


def _text_as_numbers(values: pd.Series, op: str, key: str, field: str) -> pd.Series:
    """A text column compared in order with a number, as numbers (a profile attribute holds its numbers as text,
    such as a custom loyalty points column); an error naming a value when one is not a number."""
    numbers, text = as_numbers(values)
    if text is not None:
        raise UserError(
            f"{key}: {field} holds text (such as {text!r}), not numbers, so {op} cannot compare it "
            "with a number; compare it with a text value, or use a field of numbers"
        )
    return numbers


def condition_mask(values: pd.Series, op: str, value, *, now: pd.Timestamp, key: str, field: str) -> np.ndarray:
    """Rows of ``values`` that satisfy ``op value``; missing values satisfy only ``is_null``.

    Text comparisons (``contains``, ``starts_with``, ``ends_with``) ignore case; ``=`` and ``in`` are exact.

    Args:
        values: the column.
        op: a canonical operator (``grammar.conditions.OPERATORS``).
        value: the configured value.
        now: end of the run date (exclusive), for ``in_last``.
        key: configuration key path, for error messages.
        field: the field's name, for error messages.

    Raises:
        UserError: when the value's type does not fit the column's (a date compared with text, ...).
    """
    present = values.notna().to_numpy()
    if op == "is_null":
        return ~present
    if op == "not_null":
        return present
    kind = column_kind(values)
    if op in ("before", "after", "in_last") and kind != "date":
        raise UserError(f"{key}: operator {op} needs a date field but {field} is {kind}")
    if op in ("contains", "starts_with", "ends_with"):
        if kind != "text":
            raise UserError(f"{key}: operator {op} needs a text field but {field} is {kind}")
        text = values.astype("string").str.lower()
        needle = str(value).lower()
        method = {"contains": "contains", "starts_with": "startswith", "ends_with": "endswith"}[op]
        kwargs = {"regex": False} if method == "contains" else {}
        result = getattr(text.str, method)(needle, **kwargs)
        return result.fillna(False).to_numpy(dtype=bool)
    if kind == "date":
        values = values.dt.tz_localize("UTC") if not isinstance(values.dtype, pd.DatetimeTZDtype) else values
    if kind == "text" and op in _ORDERING and all(is_number(v) for v in (value if op == "between" else [value])):
        values, kind = _text_as_numbers(values, op, key, field), "number"
    if op == "in_last":
        start = period_start(now, value)
        result = (values >= start) & (values < now)
    elif op in ("in", "not_in"):
        items = [_coerce(v, kind, key, field) for v in value]
        result = values.isin(items)
        result = ~result if op == "not_in" else result
    elif op == "between":
        low, high = (_coerce(v, kind, key, field) for v in value)
        result = (values >= low) & (values <= high)
    else:
        target = _coerce(value, kind, key, field)
        if kind == "text":
            values = values.astype("string")
        compare = {
            "=": values.__eq__,
            "!=": values.__ne__,
            "<": values.__lt__,
            "<=": values.__le__,
            ">": values.__gt__,
            ">=": values.__ge__,
            "before": values.__lt__,
            "after": values.__gt__,
        }[op]
        result = compare(target)
    return np.asarray(pd.Series(result).fillna(False), dtype=bool) & present
