"""Column-wise JSON encoding: one JSON object string per row, built with Arrow kernels instead of a row loop."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ci_pipeline.arrow_text import value_bytes


def json_values(values: pd.Series) -> pa.Array:
    """Each value of a column as a JSON literal (``null`` for missing and non-finite numbers).

    Whole numbers stored as floats are written without a fraction (``3``), which JSON readers treat alike.

    Examples:
        >>> json_values(pd.Series([1.5, None, float("inf")])).to_pylist()
        ['1.5', 'null', 'null']
    """
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        arr = pa.array(values.astype("boolean"), type=pa.bool_())
        out = pc.if_else(arr, "true", "false")
    elif pd.api.types.is_integer_dtype(dtype):
        out = pc.cast(pa.array(values.astype("Int64"), type=pa.int64()), pa.string())
    elif pd.api.types.is_float_dtype(dtype):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        out = pc.cast(pa.array(numbers, mask=~np.isfinite(numbers)), pa.string())
    elif isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        stamps = values.dt.tz_convert("UTC") if isinstance(dtype, pd.DatetimeTZDtype) else values
        suffix = "Z" if isinstance(dtype, pd.DatetimeTZDtype) else ""
        text = pa.array(stamps.dt.strftime("%Y-%m-%dT%H:%M:%S"), type=pa.string())
        out = pc.binary_join_element_wise('"', text, suffix + '"', "")
    elif isinstance(dtype, pd.StringDtype):
        out = _json_strings(pa.array(values, type=pa.string(), from_pandas=True))
    else:
        # Other values: encode each distinct value once (columns repeat values a lot).
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        encoded = pa.array([json.dumps(_plain(v)) for v in uniques] + ["null"], type=pa.string())
        # The missing value's code -1 picks the trailing "null"; Arrow's take builds the column without a Python
        # object per row.
        return encoded.take(pa.array(np.where(codes < 0, len(uniques), codes)))
    return pc.fill_null(out, "null")


#: Text that ``json.dumps`` writes as it is between two quotes: printable ASCII except ``"`` and ``\\``.
_VERBATIM = r"^[ !#-\[\]-~]*$"
#: The same bytes, as the set ``bytes.translate`` deletes.
_VERBATIM_BYTES = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')


def _json_strings(text: pa.Array) -> pa.Array:
    """JSON string literals of a text column, as ``json.dumps`` writes them (ASCII only, escapes included).

    Most values need no escape and are quoted by an Arrow kernel; only the others go through ``json.dumps``, each
    distinct one once.
    """
    out = pc.binary_join_element_wise('"', text, '"', "")
    if _all_verbatim(text):
        return out
    verbatim = pc.fill_null(pc.match_substring_regex(text, _VERBATIM), True)
    if pc.all(verbatim).as_py():
        return out
    special = pc.filter(text, pc.invert(verbatim))
    uniques = pc.unique(special)
    encoded = pa.array([json.dumps(v) for v in uniques.to_pylist()], type=pa.string())
    escaped = pc.take(encoded, pc.index_in(text, value_set=uniques))
    return pc.if_else(verbatim, out, escaped)


def _all_verbatim(text: pa.Array) -> bool:
    """Whether every byte of the column's values is one ``json.dumps`` keeps as it is: one pass over the whole
    column's bytes instead of a regular expression per value (False may also mean: look value by value)."""
    # Deleting every byte json.dumps keeps leaves nothing: one pass in C over a copy of the bytes.
    return not value_bytes(text).to_pybytes().translate(None, _VERBATIM_BYTES)


def json_objects(frame: pd.DataFrame, names: dict[str, str] | None = None) -> pd.Series:
    """One JSON object per row with sorted keys, laid out like ``json.dumps(..., sort_keys=True)``.

    Args:
        frame: the columns to encode.
        names: JSON key -> column of ``frame`` (default: every column under its own name).
    """
    names = names if names is not None else {c: c for c in frame.columns}
    if not names or len(frame) == 0:
        return pd.Series("{}", index=frame.index, dtype="string")
    # One kernel call joins the literal text between the values and the values: {"a": <a>, "b": <b>}
    items: list[str | pa.Array] = []
    for n, (key, column) in enumerate(sorted(names.items())):
        items += [("{" if n == 0 else ", ") + json.dumps(key) + ": ", json_values(frame[column])]
    text = _join(*items, "}", "")
    return pd.Series(pd.array(text, dtype="string"), index=frame.index)


def _join(*items: str | pa.Array) -> pa.Array:
    """``binary_join_element_wise`` in large strings (the objects of many rows can pass 2 GiB together); the last
    item is the separator."""
    large = [pa.scalar(i, pa.large_string()) if isinstance(i, str) else i.cast(pa.large_string()) for i in items]
    return pc.binary_join_element_wise(*large)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool | list | dict) or value is None:
        return value
    return str(value)
