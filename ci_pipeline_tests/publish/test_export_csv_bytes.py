"""CDM CSV parts are written by Arrow's CSV writer and keep the bytes of the pandas QUOTE_ALL writer."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from ci_pipeline.export.cdm import _csv_bytes, read_export, write_export
from ci_pipeline.lake import Lake


def pandas_bytes(df: pd.DataFrame) -> bytes:
    """What the export wrote before: pandas' writer, every field quoted, datetimes as ISO 8601 UTC."""
    out = df.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column].dtype):
            out[column] = pd.to_datetime(out[column], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    buffer = io.StringIO()
    out.to_csv(buffer, header=False, index=False, quoting=csv.QUOTE_ALL, lineterminator="\n")
    return buffer.getvalue().encode("utf-8")


TRICKY = pd.DataFrame(
    {
        "text": pd.array(["a", None, 'he said "hi"', "two\nlines", "é,ü", "", "'=1+1", "x\r\ny"], dtype="string"),
        "float": [1.0, np.nan, 0.1, 1e-05, 123456789.123, -0.0, 1e20, 2.5],
        "int": np.arange(8),
        "nullable_int": pd.array([1, None, 3, 4, 5, 6, 7, 8], dtype="Int64"),
        "flag": [True, False] * 4,
        "mixed": ["a", None, 3, 4.5, "b", "c", "d", "e"],
        "stamp": pd.to_datetime(["2026-01-02 03:04:05"] * 7 + [None]).tz_localize("Europe/Amsterdam"),
        "naive": pd.to_datetime(["2026-06-30"] * 8),
    }
)


def test_every_kind_of_column_keeps_its_bytes():
    for column in TRICKY.columns:
        assert _csv_bytes(TRICKY[[column]]) == pandas_bytes(TRICKY[[column]]), column
    assert _csv_bytes(TRICKY) == pandas_bytes(TRICKY)
    assert _csv_bytes(TRICKY.iloc[0:0]) == b""


def test_written_parts_read_back_as_the_values(tmp_path):
    lake = Lake.local(tmp_path)
    frame = pd.DataFrame({"CustomerId": ["C1", "C2", "C3"], "Note": ['say "x"', None, "a\nb"]})
    write_export(lake, "w", {"CustomerProfile": frame}, datetime(2026, 1, 1, tzinfo=UTC), rows_per_part=2)
    files = sorted((tmp_path / "exports" / "w" / "CustomerProfile").rglob("*.csv"))
    assert len(files) == 2
    assert files[0].read_bytes() == b'"C1","say ""x"""\n"C2",""\n'
    (exported,) = read_export(lake, "w")
    rows = [row for f in exported.files for row in csv.reader(io.StringIO(lake.read_bytes(f).decode()))]
    assert rows == [["C1", 'say "x"'], ["C2", ""], ["C3", "a\nb"]]
