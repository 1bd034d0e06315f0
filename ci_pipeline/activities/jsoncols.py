"""Column-wise JSON encoding: one JSON object string per row, built with Arrow kernels instead of a row loop."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


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
    else:
        # Text and other values: encode each distinct value once (columns repeat values a lot).
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        encoded = np.array([json.dumps(_plain(v)) for v in uniques] + ["null"], dtype=object)
        return pa.array(encoded[codes], type=pa.string())
    return pc.fill_null(out, "null")


def json_objects(frame: pd.DataFrame, names: dict[str, str] | None = None) -> pd.Series:
    """One JSON object per row with sorted keys, laid out like ``json.dumps(..., sort_keys=True)``.

    Args:
        frame: the columns to encode.
        names: JSON key -> column of ``frame`` (default: every column under its own name).
    """
    names = names if names is not None else {c: c for c in frame.columns}
    if not names or len(frame) == 0:
        return pd.Series("{}", index=frame.index, dtype="string")
    parts = [
        pc.binary_join_element_wise(json.dumps(key) + ": ", json_values(frame[column]), "")
        for key, column in sorted(names.items())
    ]
    body = pc.binary_join_element_wise(*parts, ", ") if len(parts) > 1 else parts[0]
    text = pc.binary_join_element_wise("{", body, "}", "")
    return pd.Series(pd.array(text, dtype="string"), index=frame.index)


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
