"""Column-wise JSON encoding: build one JSON object string per row without a Python loop over the rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def json_values(values: pd.Series) -> pd.Series:
    """Each value of a column as a JSON literal (``null`` for missing and non-finite numbers).

    Examples:
        >>> json_values(pd.Series([1.5, None, float("inf")])).tolist()
        ['1.5', 'null', 'null']
    """
    index = values.index
    if pd.api.types.is_bool_dtype(values.dtype):
        out = values.map({True: "true", False: "false"}).astype(object)
    elif pd.api.types.is_integer_dtype(values.dtype):
        out = values.astype("string").astype(object)
    elif pd.api.types.is_float_dtype(values.dtype):
        numbers = values.astype("float64")
        out = pd.Series(np.where(np.isfinite(numbers), numbers.astype(str), "null"), index=index, dtype=object)
    elif isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = values.dt.tz_convert("UTC") if isinstance(values.dtype, pd.DatetimeTZDtype) else values
        suffix = "Z" if isinstance(values.dtype, pd.DatetimeTZDtype) else ""
        out = ('"' + stamps.dt.strftime("%Y-%m-%dT%H:%M:%S") + suffix + '"').astype(object)
    else:
        present = values.notna()
        out = pd.Series("null", index=index, dtype=object)
        if present.any():
            out[present] = [json.dumps(_plain(v)) for v in values[present]]
        return out
    return out.where(values.notna(), "null")


def json_objects(frame: pd.DataFrame, names: dict[str, str] | None = None) -> pd.Series:
    """One JSON object per row with sorted keys (``json.dumps(..., sort_keys=True)`` layout).

    Args:
        frame: the columns to encode.
        names: JSON key -> column of ``frame`` (default: every column under its own name).
    """
    names = names if names is not None else {c: c for c in frame.columns}
    if not names:
        return pd.Series("{}", index=frame.index, dtype="string")
    parts = [json.dumps(key) + ": " + json_values(frame[column]) for key, column in sorted(names.items())]
    out = parts[0]
    for part in parts[1:]:
        out = out + ", " + part
    return ("{" + out + "}").astype("string")


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
