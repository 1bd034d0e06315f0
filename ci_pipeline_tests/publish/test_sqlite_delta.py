"""The SQLite sink applies a table's delta (the rows its stage placed since the version the sink holds, and the keys
that left) instead of comparing every row, and gives what comparing every row gives; a delta it cannot trust is
left for the comparison."""

from __future__ import annotations

import dataclasses
import sqlite3

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ci_pipeline import outputs
from ci_pipeline.dataverse.prepare import prepare
from ci_pipeline.dataverse.sink import SinkTable, TableDelta
from ci_pipeline.dataverse.sqlite import SqliteSink, row_fingerprints
from ci_pipeline_tests.publish.test_export_stored import activities as stored_activities
from ci_pipeline_tests.publish.test_sqlite_changed_rows import keys_table


def alternate_keys(rows: int, changed: dict[int, str] | None = None, dropped=(), added: int = 0) -> SinkTable:
    frame = keys_table(rows // 2, changed)
    frame = frame.drop(index=list(dropped))
    if added:
        extra = keys_table(added // 2).assign(AlternateValue=lambda f: "new-" + f["AlternateValue"])
        frame = pd.concat([frame, extra], ignore_index=True)
    return prepare("AlternateKey", outputs.build("AlternateKey", frame))


def named(ids: list[str], names: list[str]) -> SinkTable:
    """A table keyed by texts of different lengths (the published tables' GUIDs all have one)."""
    rows = pa.table({"k": ids, "name": names}).sort_by("k")
    return SinkTable("Named", "t_named", "t_nameds", "k", rows.schema, rows.num_rows, rows)


def delta(before: SinkTable, after: SinkTable, base: str, again: int = 3) -> TableDelta:
    """The delta a stage would write from ``before`` to ``after``: the new and changed rows and ``again`` unchanged
    ones placed again; the keys that left and those of the changed rows (which leave and come back)."""
    old, new, key = before.to_arrow(), after.to_arrow(), before.primary_key
    old_rows = {tuple(r.values()) for r in old.to_pylist()}
    differs = [tuple(r.values()) not in old_rows for r in new.to_pylist()]
    unchanged = [i for i, d in enumerate(differs) if not d][:again]
    for i in unchanged:
        differs[i] = True
    placed = new.filter(pa.array(differs))
    gone = pc.invert(pc.is_in(old.column(key), value_set=new.column(key)))
    changed_keys = pc.is_in(old.column(key), value_set=placed.column(key))
    removed = old.column(key).filter(pc.or_(gone, changed_keys)).combine_chunks()
    return TableDelta(base, removed, lambda: iter(placed.to_batches(max_chunksize=7)))


def versioned(table: SinkTable, version: str, changes: TableDelta | None = None) -> SinkTable:
    return dataclasses.replace(table, version=version, delta=changes)


def clean_dump(tmp_path, table: SinkTable) -> str:
    with SqliteSink(tmp_path / "clean.sqlite") as clean:
        clean.publish(table)
        return clean.dump()


def compared(monkeypatch) -> list[str]:
    """Names of the tables the sink compared row by row from now on."""
    seen: list[str] = []
    original = SqliteSink._stage

    def stage(self, table, held):
        seen.append(table.name)
        return original(self, table, held)

    monkeypatch.setattr(SqliteSink, "_stage", stage)
    return seen


@pytest.mark.parametrize("kind", ["GUID keys", "keys of different lengths"])
def test_a_delta_gives_what_comparing_every_row_gives(tmp_path, monkeypatch, kind):
    if kind == "GUID keys":
        before = alternate_keys(300)
        after = alternate_keys(300, {7: "C0", 20: "C1"}, dropped=(3, 4, 150), added=40)
    else:
        before = named([f"C{i}" for i in range(120)], [f"Zoë {i}" for i in range(120)])
        ids = [f"C{i}" for i in range(120) if i not in (2, 77)] + ["A", "C1000", "C55x", "Z", "Ö"]
        after = named(ids, ["Zoë Renamed" if i == "C5" else f"Zoë {i[1:]}" for i in ids])
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        sink.publish(versioned(before, "v1"))
        by_rows = compared(monkeypatch)
        result = sink.publish(versioned(after, "v2", delta(before, after, "v1")))
        assert by_rows == [] and result.from_delta
        state = sink._fingerprints(after.logical_name)
        content = sink.dump()
        held = sink._con.execute("SELECT version FROM state.table_state WHERE tbl = ?", (after.logical_name,))
        assert held.fetchone()[0] == "v2"
    monkeypatch.undo()
    assert content == clean_dump(tmp_path, after)
    assert state.equals(row_fingerprints(after.to_arrow(), after.primary_key))
    # Counted as comparing every row counts: the rows placed again unchanged are not written.
    with SqliteSink(tmp_path / "again.sqlite") as again:
        again.publish(before)
        expected = again.publish(after)
    found = (result.rows, result.upserted, result.deleted, result.unchanged, result.bytes)
    assert found == (expected.rows, expected.upserted, expected.deleted, expected.unchanged, expected.bytes)
    assert result.upserted > 0 and result.deleted > 0


def test_a_sink_holding_the_tables_version_writes_nothing_and_compares_nothing(tmp_path, monkeypatch):
    table = alternate_keys(100)
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        sink.publish(versioned(table, "v1"))
        before = sink.dump()
        by_rows = compared(monkeypatch)
        result = sink.publish(versioned(table, "v1"))
        assert by_rows == [] and (result.upserted, result.deleted, result.unchanged) == (0, 0, 100)
        assert sink.dump() == before


def test_a_delta_the_sink_cannot_trust_is_left_for_comparing_every_row(tmp_path, monkeypatch):
    before = alternate_keys(200)
    after = alternate_keys(200, {9: "C3"}, dropped=(10,), added=6)
    later = alternate_keys(200, {9: "C3", 11: "C4"}, dropped=(10,), added=8)
    path = tmp_path / "sink.sqlite"
    with SqliteSink(path) as sink:
        sink.publish(versioned(before, "v1"))
        by_rows = compared(monkeypatch)
        # From a version the sink does not hold (a run's publish failed in between).
        sink.publish(versioned(later, "v3", delta(after, later, "v2")))
        # One that leaves out a new row: the rows it would leave do not add up to the table.
        short = delta(later, after, "v3")
        lying = TableDelta("v3", short.removed, lambda: (b.slice(1) for b in short.batches()))
        sink.publish(versioned(after, "v4", lying))
        # A table without a version.
        sink.publish(later)
        assert by_rows == [after.name] * 3
        content = sink.dump()
    assert content == clean_dump(tmp_path, later)


def test_a_state_file_of_an_earlier_release_gains_the_versions(tmp_path, monkeypatch):
    path = tmp_path / "sink.sqlite"
    table = alternate_keys(40)
    with SqliteSink(path) as sink:
        sink.publish(table)
    with sqlite3.connect(tmp_path / "sink.sqlite-state") as db:
        db.execute("ALTER TABLE table_state DROP COLUMN version")
    with SqliteSink(path) as sink:
        by_rows = compared(monkeypatch)
        first = sink.publish(versioned(table, "v1"))
        second = sink.publish(versioned(table, "v1"))
        assert by_rows == [table.name]
        assert (first.unchanged, second.unchanged) == (40, 40)


def activities(count: int) -> SinkTable:
    return prepare("UnifiedActivity", stored_activities(count))


def test_new_activities_go_to_the_tables_end_whatever_their_keys(tmp_path):
    before, after = activities(200), activities(230)
    new = set(after.to_arrow().column(after.primary_key).to_pylist()) - set(
        before.to_arrow().column(before.primary_key).to_pylist()
    )
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        sink.publish(before)
        sink.publish(after)
        arrival = f"SELECT {after.primary_key} FROM {after.logical_name} ORDER BY rowid"
        order = [r[0] for r in sink._con.execute(arrival)]
        content = sink.dump()
    assert set(order[-len(new) :]) == new and min(new) < max(order[: -len(new)])
    assert content == clean_dump(tmp_path, after)


def test_a_table_of_an_earlier_releases_layout_is_written_again_in_this_ones(tmp_path):
    table = activities(60)
    path = tmp_path / "sink.sqlite"
    with SqliteSink(path) as sink:
        sink.publish(table)
    # The layout of an earlier release: the activities clustered by their key.
    with sqlite3.connect(path) as db:
        name = table.logical_name
        columns = ", ".join(f'"{c}" TEXT' + (" PRIMARY KEY" if c == table.primary_key else "") for c in table.columns)
        db.execute(f"ALTER TABLE {name} RENAME TO old")
        db.execute(f"CREATE TABLE {name} ({columns}) WITHOUT ROWID")
        db.execute(f"INSERT INTO {name} SELECT * FROM old")
        db.execute("DROP TABLE old")
    with SqliteSink(path) as sink:
        result = sink.publish(table)
        layout = sink._con.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        content = sink.dump()
    assert "WITHOUT ROWID" not in layout.upper() and (result.rows, result.upserted, result.deleted) == (60, 60, 0)
    assert content == clean_dump(tmp_path, table)


def test_rows_changed_in_place_stay_clustered_by_their_key(tmp_path):
    with SqliteSink(tmp_path / "sink.sqlite") as sink:
        sink.publish(alternate_keys(20))
        sink.publish(activities(20))
        layouts = dict(sink._con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    assert "WITHOUT ROWID" in layouts["msdynci_alternatekey"]
    assert "WITHOUT ROWID" not in layouts["msdynci_unifiedactivity"]
