"""A table stored in the lake is exported in batches with the bytes of the whole-frame path, or loaded when it must."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pytest

from ci_pipeline import outputs
from ci_pipeline.errors import UserError
from ci_pipeline.export import StoredTable, cdm, read_export, write_export, write_table
from ci_pipeline.lake import Lake

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def activities(n: int = 7) -> pd.DataFrame:
    content = pd.DataFrame(
        {
            "CustomerId": [f"C{i % 3}" for i in range(n)],
            "ActivityId": [f"shop_orders_{i}" for i in range(n)],
            "SourceEntityName": "orders",
            "SourceActivityId": [str(i) for i in range(n)],
            "ActivityType": "SalesOrder",
            # A fraction of a second, a time before 1970 and one in another zone: all written as UTC seconds.
            "ActivityTimeStamp": pd.to_datetime(
                ["2026-01-02 03:04:05.999", "1969-12-31 23:59:59.5", "2026-06-30 00:00:00.0"]
                + ["2025-01-01 00:00:00.0"] * (n - 3)
            ).tz_localize("Europe/Amsterdam"),
            # Cells a spreadsheet would run, a plain signed number, quotes, a line break, a missing value.
            "Title": ["=SUM(A1)", "-5.25", 'say "hi"', "two\nlines", None, "@me", "+1 (530) 991-1656"][:n]
            + ["t"] * max(0, n - 7),
            "Description": None,
            "URL": "https://example.com/a,b",
            "SemanticData": '{"amount": 1.5}',
        }
    )
    return outputs.build("UnifiedActivity", content)


def csv_files(lake: Lake, name: str) -> dict[str, bytes]:
    root = lake.path(f"exports/{name}")
    return {p[len(root) :]: lake.fs.cat_file(p) for p in lake.fs.find(root) if p.endswith(".csv")}


@pytest.mark.parametrize("rows_per_part", [1, 3, 7, 100])
def test_a_stored_table_is_exported_in_parts_with_the_bytes_of_the_frame_path(tmp_path, rows_per_part):
    lake = Lake.local(tmp_path)
    table = activities()
    lake.write_parquet("ci_pipeline/activities/unified_activity.parquet", table)
    stored = StoredTable(lake, "ci_pipeline/activities/unified_activity.parquet")
    assert stored.streamable("UnifiedActivity")

    by_frame = write_export(lake, "frame", {"UnifiedActivity": table}, T0, rows_per_part=rows_per_part)
    streamed = write_export(lake, "stored", {"UnifiedActivity": stored}, T0, rows_per_part=rows_per_part)

    assert csv_files(lake, "stored") == csv_files(lake, "frame")
    assert streamed.metadata() | {"root": ""} == by_frame.metadata() | {"root": "", "export": "stored"}
    assert streamed.escaped_cells == 2  # =SUM(A1) and @me; the signed number and the phone number stay
    text = b"".join(csv_files(lake, "stored").values()).decode()
    assert '"2026-01-02T02:04:05Z"' in text and '"1969-12-31T22:59:59Z"' in text


def test_an_empty_stored_table_writes_one_empty_part(tmp_path):
    lake = Lake.local(tmp_path)
    lake.write_parquet("t.parquet", activities().iloc[0:0])
    result = write_export(lake, "w", {"UnifiedActivity": StoredTable(lake, "t.parquet")}, T0)
    assert result.tables["UnifiedActivity"] == {"rows": 0, "parts": 1, "bytes": 0}


def test_a_stored_table_out_of_key_order_is_loaded_and_sorted_like_a_frame(tmp_path):
    lake = Lake.local(tmp_path)
    table = activities()
    lake.write_parquet("t.parquet", table.iloc[::-1])
    stored = StoredTable(lake, "t.parquet")
    assert not stored.streamable("UnifiedActivity")
    write_export(lake, "stored", {"UnifiedActivity": stored}, T0)
    write_export(lake, "frame", {"UnifiedActivity": table}, T0)
    assert csv_files(lake, "stored") == csv_files(lake, "frame")


def test_a_stored_table_with_a_repeated_key_fails_with_the_contract_error(tmp_path):
    lake = Lake.local(tmp_path)
    table = activities()
    lake.write_parquet("t.parquet", pd.concat([table.iloc[:2], table.iloc[1:]], ignore_index=True))
    with pytest.raises(UserError, match="rows share a msdynci_unifiedactivityid"):
        write_export(lake, "w", {"UnifiedActivity": StoredTable(lake, "t.parquet")}, T0)


def test_a_missing_stored_table_names_its_path(tmp_path):
    lake = Lake.local(tmp_path)
    with pytest.raises(UserError, match="ci_pipeline/activities/unified_activity.parquet: not found in the lake"):
        write_export(
            lake, "w", {"UnifiedActivity": StoredTable(lake, "ci_pipeline/activities/unified_activity.parquet")}, T0
        )


@pytest.mark.parametrize("reverse", [False, True])
def test_parts_are_written_a_batch_at_a_time_with_the_bytes_of_the_frame_path(tmp_path, monkeypatch, reverse):
    # Two rows a batch and three a part: parts begin and end inside batches, in key order and when sorted first.
    monkeypatch.setattr(cdm, "BATCH_ROWS", 2)
    lake = Lake.local(tmp_path)
    table = activities(8)
    lake.write_parquet("t.parquet", table.iloc[::-1] if reverse else table)
    write_export(lake, "stored", {"UnifiedActivity": StoredTable(lake, "t.parquet")}, T0, rows_per_part=3)
    write_export(lake, "frame", {"UnifiedActivity": table}, T0, rows_per_part=3)
    assert csv_files(lake, "stored") == csv_files(lake, "frame")
    assert len(csv_files(lake, "stored")) == 3


def test_a_failure_while_a_part_is_written_leaves_no_part_file_and_the_previous_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(cdm, "BATCH_ROWS", 2)
    lake = Lake.local(tmp_path)
    lake.write_parquet("t.parquet", activities(8))
    stored = {"UnifiedActivity": StoredTable(lake, "t.parquet")}
    write_export(lake, "w", stored, T0)
    before = {p: lake.fs.cat_file(p) for p in lake.fs.find(lake.path("exports"))}
    encode = cdm._csv_part
    calls = []

    def breaks_on_the_third_batch(rows, escape):
        calls.append(rows.num_rows)
        if len(calls) == 3:
            raise OSError("disk full")
        return encode(rows, escape)

    monkeypatch.setattr(cdm, "_csv_part", breaks_on_the_third_batch)
    with pytest.raises(OSError, match="disk full"):
        write_export(lake, "w", stored, datetime(2026, 3, 2, tzinfo=UTC))
    # Neither the half-written part nor its temporary file is left; the snapshot before and its model.json stay.
    assert {p: lake.fs.cat_file(p) for p in lake.fs.find(lake.path("exports"))} == before


def test_the_arrow_formula_check_escapes_what_the_frame_check_escapes_in_a_sliced_column():
    values = ["x", "=1+2", None, "", "é=", "\0z", "\tcmd", "-5.25", "+1 (530) 991-1656", "@me", "-x", "\n=1"]
    # A slice starts inside the column's buffers: the first bytes must be read at the slice's offsets.
    column = pa.array(["=before", *values], pa.large_string()).slice(1)
    escaped, count = cdm._escape_formulas(column)
    by_frame, frame_count = cdm.escape_formula_cells(pd.DataFrame({"v": pd.array(values, dtype="string")}))
    assert escaped.to_pylist() == [None if v is pd.NA else v for v in by_frame["v"].tolist()]
    assert count == frame_count == 6


def export_files(lake: Lake, name: str) -> dict[str, bytes]:
    root = lake.path(f"exports/{name}")
    return {p[len(root) :]: lake.fs.cat_file(p) for p in lake.fs.find(root)}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_table_written_ahead_is_taken_by_the_export_as_written(tmp_path, fmt):
    lake = Lake.local(tmp_path)
    lake.write_parquet("t.parquet", activities(8))
    stored = {"UnifiedActivity": StoredTable(lake, "t.parquet")}
    whole = write_export(lake, "whole", stored, T0, fmt=fmt, rows_per_part=3)

    record = write_table(lake, "ahead", "UnifiedActivity", stored["UnifiedActivity"], T0, fmt=fmt, rows_per_part=3)
    assert record["rows"] == 8 and len(record["files"]) == 3
    assert record["files"][0] == "UnifiedActivity/2026/03/01/1200/UnifiedActivity_1." + fmt
    taken = write_export(lake, "ahead", stored, T0, fmt=fmt, rows_per_part=3)

    assert taken.taken == ["UnifiedActivity"] and whole.taken == []
    assert taken.tables == whole.tables and taken.escaped_cells == whole.escaped_cells
    # The same data files and metadata (named after the export); the hidden record is the only other file.
    ahead = export_files(lake, "ahead")
    record_file = "/UnifiedActivity/2026/03/01/1200/" + cdm.TABLE_RECORD
    assert json.loads(ahead.pop(record_file))["source"] == stored["UnifiedActivity"].state()
    assert ahead.keys() == export_files(lake, "whole").keys()
    for path, data in export_files(lake, "whole").items():
        if not path.endswith(("model.json", ".cdm.json")):
            assert ahead[path] == data, path
    assert [e.files for e in read_export(lake, "ahead")] == [[f"exports/ahead/{f}" for f in record["files"]]]


def test_a_table_changed_after_it_was_written_ahead_is_written_again(tmp_path):
    lake = Lake.local(tmp_path)
    lake.write_parquet("t.parquet", activities(8))
    stored = StoredTable(lake, "t.parquet")
    write_table(lake, "w", "UnifiedActivity", stored, T0)
    lake.write_parquet("t.parquet", activities(5))
    result = write_export(lake, "w", {"UnifiedActivity": stored}, T0)
    assert result.taken == [] and result.tables["UnifiedActivity"]["rows"] == 5
    write_export(lake, "frame", {"UnifiedActivity": activities(5)}, T0)
    assert csv_files(lake, "w") == csv_files(lake, "frame")


@pytest.mark.parametrize(
    "change",
    [
        {"rows_per_part": 3},
        {"escape_formulas": False},
        {"fmt": "parquet"},
        {"timestamp": datetime(2026, 3, 2, tzinfo=UTC)},
    ],
)
def test_a_table_written_ahead_with_other_settings_or_for_another_snapshot_is_written_again(tmp_path, change):
    lake = Lake.local(tmp_path)
    lake.write_parquet("t.parquet", activities(8))
    stored = StoredTable(lake, "t.parquet")
    write_table(lake, "w", "UnifiedActivity", stored, T0)
    settings = {"timestamp": T0, **change}
    result = write_export(lake, "w", {"UnifiedActivity": stored}, settings.pop("timestamp"), **settings)
    assert result.taken == []
    write_export(lake, "frame", {"UnifiedActivity": stored}, result_time(result), **settings)
    assert sorted(read_export(lake, "w")[0].files) == [
        f.replace("exports/frame/", "exports/w/") for f in sorted(read_export(lake, "frame")[0].files)
    ]


def result_time(result) -> datetime:
    return datetime.strptime(result.snapshot, "%Y/%m/%d/%H%M").replace(tzinfo=UTC)


def test_a_table_written_ahead_with_a_part_file_gone_is_written_again(tmp_path):
    lake = Lake.local(tmp_path)
    lake.write_parquet("t.parquet", activities(8))
    stored = StoredTable(lake, "t.parquet")
    record = write_table(lake, "w", "UnifiedActivity", stored, T0, rows_per_part=3)
    lake.delete(f"exports/w/{record['files'][1]}")
    result = write_export(lake, "w", {"UnifiedActivity": stored}, T0, rows_per_part=3)
    assert result.taken == [] and lake.exists(f"exports/w/{record['files'][1]}")


def test_writing_a_table_ahead_again_replaces_its_record_and_files(tmp_path):
    lake = Lake.local(tmp_path)
    lake.write_parquet("t.parquet", activities(8))
    stored = StoredTable(lake, "t.parquet")
    write_table(lake, "w", "UnifiedActivity", stored, T0, rows_per_part=3)
    lake.write_parquet("t.parquet", activities(4))
    record = write_table(lake, "w", "UnifiedActivity", stored, T0, rows_per_part=3)
    result = write_export(lake, "w", {"UnifiedActivity": stored}, T0, rows_per_part=3)
    # The export takes the new files and removes the third part, which the new record does not name.
    assert result.taken == ["UnifiedActivity"] and result.tables["UnifiedActivity"] == {
        "rows": 4,
        "parts": 2,
        "bytes": record["bytes"],
    }
    assert len(csv_files(lake, "w")) == 2
