"""Incremental CDM folders (upserts/deletes by key, newest wins, closed hours only) and Delta version tracking."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime

import pandas as pd
from deltalake import DeltaTable, write_deltalake

from ci_pipeline_tests.ingest.conftest import checks, materialize, metadata, write_config


def _hour(root, stamp: str, kind: str, name: str, text: str):
    folder = root / "IncrementalData" / stamp / kind
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_incremental_layout_applies_upserts_and_deletes_by_key(tmp_path, ingest):
    root = tmp_path / "contacts"
    (root / "FullData").mkdir(parents=True)
    (root / "FullData" / "part-0.csv").write_text(
        "id,name,modified\n1,Ann,2026-06-01T00:00:00\n2,Bob,2026-06-01T00:00:00\n3,Cy,2026-06-01T00:00:00\n"
    )
    _hour(
        root,
        "2026/06/30/08",
        "Upserts",
        "u.csv",
        "id,name,modified\n1,Ann B,2026-06-30T08:10:00\n4,Dee,2026-06-30T08:20:00\n",
    )
    # an older change arriving later must not win over the newer one
    _hour(root, "2026/06/30/09", "Upserts", "u.csv", "id,name,modified\n1,Ann OLD,2026-06-15T00:00:00\n")
    _hour(root, "2026/06/30/09", "Deletes", "d.csv", "id\n2\n")
    # the hour 10:00-11:00 has not ended at 10:30: not read yet
    _hour(root, "2026/06/30/10", "Upserts", "u.csv", "id,name,modified\n3,Cy NEW,2026-06-30T10:05:00\n")
    table = {
        "t": {
            "format": "csv",
            "path": "contacts",
            "primary_key": "id",
            "columns": {"modified": "datetime"},
            "incremental": {"last_modified": "modified"},
        }
    }
    now = datetime(2026, 6, 30, 10, 30, tzinfo=UTC)
    result = ingest(table, now=now)
    assert result.data[["id", "name"]].values.tolist() == [["1", "Ann B"], ["3", "Cy"], ["4", "Dee"]]
    assert result.rows_read == 7 and result.rows_merged == 4 and result.rows_quarantined == 0
    assert result.balanced
    assert any("2026/06/30/10" in n for n in result.notes)
    assert result.warnings == []  # the hour still open is waiting, not outside the layout
    later = ingest(table, now=datetime(2026, 6, 30, 11, 0, tzinfo=UTC))
    assert later.data.set_index("id").loc["3", "name"] == "Cy NEW"

    # Files no hour folder's Upserts/ or Deletes/ holds are not read, and told.
    _hour(root, "2026/06/30/0930", "Upserts", "u.csv", "id,name,modified\n5,Eve,2026-06-30T09:31:00\n")
    _hour(root, "2026/06/30/09", "upserts", "v.csv", "id,name,modified\n7,Fay,2026-06-30T09:40:00\n")
    told = ingest(table, now=datetime(2026, 6, 30, 11, 0, tzinfo=UTC))
    assert "5" not in set(told.data["id"]) and told.balanced
    (warning,) = told.warnings
    assert warning.endswith(
        "2 file(s) outside the layout IncrementalData/yyyy/mm/dd/hh/Upserts|Deletes/ were not read: "
        "2026/06/30/09/upserts/v.csv, 2026/06/30/0930/Upserts/u.csv; move them into an hour folder's Upserts/ or "
        "Deletes/ (names are case-sensitive)"
    )


def test_gzipped_parts_of_the_incremental_layout_are_read(tmp_path, ingest):
    """Spark and Azure Data Factory may write each part gzipped (``.csv.gz``): read, not left unread unsaid."""
    import gzip

    root = tmp_path / "contacts"
    (root / "FullData").mkdir(parents=True)
    (root / "FullData" / "part-0.csv.gz").write_bytes(gzip.compress(b"id,name\n1,Ann\n2,Bob\n"))
    folder = root / "IncrementalData" / "2026/06/30/08" / "Upserts"
    folder.mkdir(parents=True)
    (folder / "u.csv.gz").write_bytes(gzip.compress(b"id,name\n1,Ann B\n3,Cy\n"))
    (root / "IncrementalData" / "2026/06/30/08" / "Deletes").mkdir()
    (root / "IncrementalData" / "2026/06/30/08" / "Deletes" / "d.csv").write_text("id\n2\n")
    table = {"t": {"format": "csv", "path": "contacts", "primary_key": "id", "incremental": {}}}
    result = ingest(table, now=datetime(2026, 7, 1, tzinfo=UTC))
    assert result.data[["id", "name"]].values.tolist() == [["1", "Ann B"], ["3", "Cy"]]
    assert result.balanced and result.warnings == []


def _delta_config(tmp_path):
    return write_config(tmp_path, {"events": {"format": "delta", "path": "events", "primary_key": "id"}})


def test_delta_table_remembers_the_version_and_reads_only_new_files(tmp_path):
    path = str(tmp_path / "events")
    write_deltalake(path, pd.DataFrame({"id": [2, 1], "v": ["b", "a"]}))
    config = _delta_config(tmp_path)

    first = materialize(config)
    assert first.success
    assert metadata(first, ["src", "events"])["rows_accepted"] == 2
    assert "full read" in metadata(first, ["src", "events"])["notes"]

    write_deltalake(path, pd.DataFrame({"id": [3, 1], "v": ["c", "again"]}), mode="append")
    second = materialize(config)
    meta = metadata(second, ["src", "events"])
    assert "read 1 new file(s) only, 2 row(s) kept from version 0" in meta["notes"]
    assert (meta["rows_read"], meta["rows_accepted"], meta["rows_quarantined"]) == (4, 3, 1)
    stored = pd.read_parquet(tmp_path / "lake" / "ci_pipeline" / "src" / "events.parquet")
    assert stored["id"].tolist() == [1, 2, 3] and stored["v"].tolist() == ["a", "b", "c"]
    assert checks(second)["rows_balance"].passed

    third = materialize(config)
    assert "unchanged" in metadata(third, ["src", "events"])["notes"]
    assert metadata(third, ["src", "events"])["rows_accepted"] == 3

    write_deltalake(path, pd.DataFrame({"id": [9], "v": ["z"]}), mode="overwrite")
    fourth = materialize(config)
    assert "rewritten or removed" in metadata(fourth, ["src", "events"])["notes"]
    assert pd.read_parquet(tmp_path / "lake" / "ci_pipeline" / "src" / "events.parquet")["id"].tolist() == [9]


def test_a_key_repeated_across_delta_versions_keeps_its_first_row_read_whole_or_version_by_version(tmp_path):
    """A full read meets the files in the order they were written, as reads of one version at a time do."""
    path = str(tmp_path / "events")
    write_deltalake(path, pd.DataFrame({"id": [1], "v": ["version0"]}))
    config = _delta_config(tmp_path)
    assert materialize(config).success
    for version in range(1, 6):
        write_deltalake(path, pd.DataFrame({"id": [1], "v": [f"version{version}"]}), mode="append")
    assert materialize(config).success
    stepwise = pd.read_parquet(tmp_path / "lake" / "ci_pipeline" / "src" / "events.parquet")
    shutil.rmtree(tmp_path / "lake")
    whole = materialize(config)
    assert "full read" in metadata(whole, ["src", "events"])["notes"]
    fresh = pd.read_parquet(tmp_path / "lake" / "ci_pipeline" / "src" / "events.parquet")
    assert stepwise["v"].tolist() == fresh["v"].tolist() == ["version0"]


def test_delta_history_vacuumed_means_a_full_read(tmp_path):
    path = tmp_path / "events"
    write_deltalake(str(path), pd.DataFrame({"id": [1], "v": ["a"]}))
    config = _delta_config(tmp_path)
    assert materialize(config).success
    write_deltalake(str(path), pd.DataFrame({"id": [2], "v": ["b"]}), mode="append")
    DeltaTable(str(path)).create_checkpoint()
    os.remove(path / "_delta_log" / "00000000000000000000.json")  # what log clean-up does to old versions
    result = materialize(config)
    meta = metadata(result, ["src", "events"])
    assert "vacuumed" in meta["notes"] and "full read of version 1" in meta["notes"]
    assert meta["rows_accepted"] == 2


def test_incremental_layout_under_a_cdm_entity_takes_its_attributes(tmp_path, ingest):
    import json

    (tmp_path / "cdm" / "Members" / "FullData").mkdir(parents=True)
    (tmp_path / "cdm" / "model.json").write_text(
        json.dumps(
            {
                "name": "loyalty",
                "entities": [
                    {
                        "$type": "LocalEntity",
                        "name": "Members",
                        "attributes": [
                            {"name": "member_id", "dataType": "string"},
                            {"name": "points", "dataType": "int64"},
                        ],
                    }
                ],
            }
        )
    )
    (tmp_path / "cdm" / "Members" / "FullData" / "p.csv").write_text("m1,10\nm2,20\n")
    _hour(tmp_path / "cdm" / "Members", "2026/06/29/23", "Upserts", "u.csv", "m2,25\nm3,x\n")
    _hour(tmp_path / "cdm" / "Members", "2026/06/29/23", "Deletes", "d.csv", "m1,\n")
    table = {"members": {"format": "cdm", "path": "cdm/model.json", "primary_key": "member_id", "incremental": {}}}
    result = ingest(table, table="members", now=datetime(2026, 6, 30, tzinfo=UTC))
    assert result.data.values.tolist() == [["m2", 25]]
    assert result.data["points"].dtype == "Int64"
    assert result.quarantine["kind"].tolist() == ["malformed_value"]
    assert (result.rows_read, result.rows_merged) == (5, 3) and result.balanced
