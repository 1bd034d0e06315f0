"""A table stored in the lake reaches the SQLite sink in batches, bulk-loaded from Arrow, with the rows and text of the
whole-frame path; only changed rows are written, across batch boundaries."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ci_pipeline import outputs
from ci_pipeline.dataverse import prepare, prepare_stored
from ci_pipeline.dataverse import sink as sink_module
from ci_pipeline.dataverse.naming import utc_seconds_text
from ci_pipeline.dataverse.sqlite import SqliteSink
from ci_pipeline.errors import UserError
from ci_pipeline.export import StoredTable, write_export
from ci_pipeline.lake import Lake
from ci_pipeline_tests.publish.test_export_stored import activities, csv_files

#: The module, not the function the package exports under the same name.
prepare_module = importlib.import_module("ci_pipeline.dataverse.prepare")


@pytest.fixture
def small_batches(monkeypatch):
    """Three rows a batch, so a handful of rows crosses several batch boundaries."""
    monkeypatch.setattr(sink_module, "BATCH_ROWS", 3)
    monkeypatch.setattr(prepare_module, "BATCH_ROWS", 3)


def profiles() -> pd.DataFrame:
    """Profile attributes of every type a unified attribute can have, missing values included."""
    return pd.DataFrame(
        {
            "CustomerId": [f"C{i}" for i in range(7)],
            "FullName": ["Zoë", None, "=cmd", "b", "c", "d", "e"],
            "Score": [1.0, 0.1, 1e-05, 1e16, None, -0.0, 123456789012345.6],
            "Visits": pd.array([1, None, 3, -4, 5, 6, 7], dtype="Int64"),
            "Vip": pd.array([True, False, None, True, True, False, True], dtype="boolean"),
            "Joined": pd.to_datetime(
                ["2026-01-02 03:04:05.5", None, "1969-12-31 00:00:00.0"] + ["2026-02-02 00:00:00.0"] * 4, utc=True
            ),
            "PreviousCustomerId": None,
        }
    )


def store(lake: Lake, relative: str, frame: pd.DataFrame) -> pa.dataset.Dataset:
    lake.write_parquet(relative, frame)
    return lake.dataset(relative)


def dump_of(path, tables) -> str:
    with SqliteSink(path) as sink:
        for table in tables:
            sink.publish(table)
        return sink.dump()


def test_stored_tables_reach_the_sink_with_the_rows_and_text_of_the_frame_path(tmp_path, small_batches):
    lake = Lake.local(tmp_path / "lake")
    keys = outputs.build(
        "AlternateKey",
        pd.DataFrame(
            {
                "DataSourceName": "crm",
                "EntityName": "contacts",
                "AlternateValue": [f"k{i}" for i in range(8)],
                "KeyRing": "[]",
                "CustomerId": [f"C{i % 3}" for i in range(8)],
            }
        ),
    )
    frames = {"UnifiedActivity": activities(11), "AlternateKey": keys, "CustomerProfile": profiles()}
    by_frame = [prepare(table, frame) for table, frame in frames.items()]
    stored = [
        # The activities in key order are streamed; the keys stored backwards and the profiles are sorted whole.
        prepare_stored("UnifiedActivity", store(lake, "ua.parquet", frames["UnifiedActivity"])),
        prepare_stored("AlternateKey", store(lake, "ak.parquet", keys.iloc[::-1])),
        prepare_stored("CustomerProfile", store(lake, "cp.parquet", profiles())),
    ]
    assert not isinstance(stored[0].source, pa.Table) and isinstance(stored[1].source, pa.Table)
    assert [b.num_rows for b in stored[0].batches()] == [3, 3, 3, 2]
    assert dump_of(tmp_path / "stored.sqlite", stored) == dump_of(tmp_path / "frame.sqlite", by_frame)
    profile = stored[2].frame.set_index("msdynci_customerid")
    assert profile.loc["C2", "msdynci_score"] == "1e-05" and profile.loc["C5", "msdynci_score"] == "-0.0"
    assert profile.loc["C0", "msdynci_vip"] == "True" and pd.isna(profile.loc["C1", "msdynci_visits"])


def test_only_changed_rows_are_written_across_batches_and_the_result_equals_a_clean_load(tmp_path, small_batches):
    lake = Lake.local(tmp_path / "lake")
    before = activities(20)
    after = before.copy()
    after.loc[[1, 9, 17], "Title"] = "changed"
    # Rows gone from the start, the middle and the end; new rows land between held keys.
    after = after.drop(index=[0, 10, 19])
    grown = activities(26)
    fresh = grown[~grown["ActivityId"].isin(before["ActivityId"])]
    after = outputs.finish("UnifiedActivity", pd.concat([after, fresh]))
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        first = sink.publish(prepare_stored("UnifiedActivity", store(lake, "v1.parquet", before)))
        second = sink.publish(prepare_stored("UnifiedActivity", store(lake, "v2.parquet", after)))
        again = sink.publish(prepare_stored("UnifiedActivity", store(lake, "v2.parquet", after)))
        content = sink.dump()
    assert (first.upserted, first.deleted) == (20, 0)
    assert (second.rows, second.upserted, second.deleted, second.unchanged) == (23, 3 + 6, 3, 14)
    assert (again.upserted, again.deleted, again.unchanged) == (0, 0, 23)
    assert content == dump_of(tmp_path / "clean.sqlite", [prepare("UnifiedActivity", after)])
    assert not list(tmp_path.glob("sink.sqlite-load-*")), "the load database is removed after each table"


def test_a_stored_table_missing_an_identifying_value_is_refused_and_changes_nothing(tmp_path, small_batches):
    lake = Lake.local(tmp_path / "lake")
    table = activities(9)
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        sink.publish(prepare_stored("UnifiedActivity", store(lake, "ok.parquet", table)))
        held = sink.dump()
        broken = table.copy()
        broken.loc[7, "ActivityId"] = None
        with pytest.raises(
            UserError, match=r"UnifiedActivity: 1 row\(s\) of a batch have no ActivityId \(e.g. row 7\)"
        ):
            sink.publish(prepare_stored("UnifiedActivity", store(lake, "bad.parquet", broken)))
        assert sink.dump() == held


@pytest.mark.parametrize("statistics", [True, False])
def test_a_missing_identifying_value_is_found_with_or_without_the_files_statistics(tmp_path, statistics):
    # Statistics that rule out a missing value spare reading the column; without them the column is read.
    lake = Lake.local(tmp_path)
    broken = activities(5)
    broken.loc[3, "CustomerId"] = None
    pq.write_table(
        pa.Table.from_pandas(broken, preserve_index=False), tmp_path / "t.parquet", write_statistics=statistics
    )
    metadata = pq.read_metadata(tmp_path / "t.parquet")
    assert prepare_module.stated_filled(metadata, "ActivityId") is statistics
    assert not prepare_module.stated_filled(metadata, "CustomerId")
    with pytest.raises(UserError, match=r"1 row\(s\) of a batch have no CustomerId \(e.g. row 3\)"):
        prepare_stored("UnifiedActivity", lake.dataset("t.parquet"))
    assert not StoredTable(lake, "t.parquet").streamable("UnifiedActivity")


def test_a_failure_while_loading_rows_leaves_the_table_as_it_was(tmp_path, small_batches):
    lake = Lake.local(tmp_path / "lake")
    table = activities(9)
    changed = table.assign(Title="new")
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        sink.publish(prepare_stored("UnifiedActivity", store(lake, "v1.parquet", table)))
        held = sink.dump()
        good = prepare_stored("UnifiedActivity", store(lake, "v2.parquet", changed))

        def breaks():
            batches = good.batches()
            yield next(batches)
            raise OSError("the lake went away")

        with pytest.raises(OSError, match="the lake went away"):
            sink.publish(sink_module.SinkTable(**{**good.__dict__, "source": breaks}))
        assert sink.dump() == held
        assert sink.publish(good).upserted == 9
    assert not list(tmp_path.glob("sink.sqlite-load-*"))


def test_timestamps_become_utc_seconds_text_exactly_as_pandas_writes_them():
    rng = np.random.default_rng(7)
    nanos = rng.integers(-5_000_000_000_000_000_000, 9_000_000_000_000_000_000, 5_000)
    stamps = pd.Series(pd.to_datetime(nanos, utc=True))
    stamps[[3, 99]] = pd.NaT
    for unit in ("s", "ms", "us", "ns"):
        values = stamps.astype(f"datetime64[{unit}, UTC]")
        expected = values.dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype("string")
        text = utc_seconds_text(pa.array(values).slice(1))
        assert text.to_pylist() == [None if pd.isna(v) else v for v in expected.iloc[1:]]
    # Naive values are UTC; years beyond four digits keep Arrow's own text.
    naive = pa.array([0, -1, 253_402_300_800], pa.timestamp("s"))
    assert utc_seconds_text(naive).to_pylist() == [
        "1970-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "10000-01-01T00:00:00Z",
    ]


def test_a_stored_profile_with_numbers_and_booleans_is_exported_with_the_bytes_of_the_frame_path(tmp_path):
    lake = Lake.local(tmp_path)
    # Stored out of CustomerId order: sorted as Arrow, not loaded as a frame.
    lake.write_parquet("cp.parquet", profiles().iloc[::-1])
    stored = StoredTable(lake, "cp.parquet")
    assert stored.plain("CustomerProfile") is False  # a non-contract timestamp column is written as pandas' text
    plain = profiles().drop(columns="Joined")
    lake.write_parquet("plain.parquet", plain.iloc[::-1])
    stored = StoredTable(lake, "plain.parquet")
    assert stored.plain("CustomerProfile") and not stored.streamable("CustomerProfile")
    stamp = datetime(2026, 3, 1, tzinfo=UTC)
    write_export(lake, "stored", {"CustomerProfile": stored}, stamp, rows_per_part=3)
    write_export(lake, "frame", {"CustomerProfile": outputs.finish("CustomerProfile", plain)}, stamp, rows_per_part=3)
    assert csv_files(lake, "stored") == csv_files(lake, "frame")
    assert len(csv_files(lake, "stored")) == 3


def test_a_table_another_run_published_meanwhile_is_compared_again(tmp_path, monkeypatch):
    path = tmp_path / "sink.sqlite"
    ours = activities(9)
    theirs = ours.assign(Title="theirs")
    with SqliteSink(path) as sink:
        sink.publish(prepare("UnifiedActivity", ours))
    stage = SqliteSink._stage
    interleaved = []

    def other_run_publishes_first(self, table, seen):
        if not interleaved:
            # Between reading the state and committing, another run publishes the same table.
            interleaved.append(None)
            with SqliteSink(path) as other:
                interleaved[0] = other.publish(prepare("UnifiedActivity", theirs))
        return stage(self, table, seen)

    monkeypatch.setattr(SqliteSink, "_stage", other_run_publishes_first)
    with SqliteSink(path) as sink:
        result = sink.publish(prepare("UnifiedActivity", ours))
        content = sink.dump()
    assert interleaved[0].upserted == 9 and result.upserted == 9
    assert content == dump_of(tmp_path / "clean.sqlite", [prepare("UnifiedActivity", ours)])
