"""The rules that decide which source files a run picks up: new, changed, partial, temporary, hour folders."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ci_pipeline.orchestration.files import (
    FileState,
    hour_folder_closes_at,
    is_temporary,
    listing_digest,
    plan_table,
    run_key,
)

NOW = datetime(2026, 6, 30, 15, 30, tzinfo=UTC)
OLD = NOW.timestamp() - 3600
FRESH = NOW.timestamp() - 5


def tick(previous, files, settle=60, now=NOW):
    return plan_table(previous, files, now, settle)


@pytest.mark.parametrize(
    "name",
    ["a.csv.tmp", "a_tmp", "a.csv~", "a.csv.crdownload", "a.csv._COPYING_", ".a.csv.1f2e.tmp", "x/_temporary/0/a"],
)
def test_temporary_names(name):
    assert is_temporary(f"container/folder/{name}")


@pytest.mark.parametrize("name", ["a.csv", "part-0001.parquet", "_delta_log/00000.json", "model.json"])
def test_final_names(name):
    assert not is_temporary(f"container/folder/{name}")


def test_file_state_from_azure_and_local_info():
    azure = FileState.from_info({"size": 3, "last_modified": NOW, "etag": '"0x8D"', "type": "file"})
    assert azure == FileState(3, NOW.timestamp(), "0x8D")
    assert FileState.from_info({"size": 3, "mtime": 12.5}) == FileState(3, 12.5, None)


def test_first_tick_is_the_baseline():
    plan = tick(None, {"t/a.csv": FileState(10, OLD), "t/b.tmp": FileState(1, OLD)})
    assert not plan.changed
    assert plan.cursor == {"files": 1, "digest": listing_digest({"t/a.csv": FileState(10, OLD)}), "watermark": OLD}


def test_new_settled_file_is_ready_and_then_seen():
    baseline = tick(None, {}).cursor
    plan = tick(baseline, {"t/a.csv": FileState(10, OLD)})
    assert plan.ready == {"t/a.csv": FileState(10, OLD)}
    again = tick(plan.cursor, {"t/a.csv": FileState(10, OLD)})
    assert not again.changed and not again.waiting


def test_changed_file_is_ready_again():
    seen = tick(None, {"t/a.csv": FileState(10, OLD, "e1")}).cursor
    plan = tick(seen, {"t/a.csv": FileState(10, OLD + 1, "e2")})
    assert list(plan.ready) == ["t/a.csv"]


def test_growing_file_waits_until_its_size_holds_between_ticks():
    baseline = tick(None, {}).cursor
    first = tick(baseline, {"t/a.csv": FileState(10, FRESH)})
    assert not first.changed and "still being written" in first.waiting["t/a.csv"]
    second = tick(first.cursor, {"t/a.csv": FileState(20, FRESH + 1)})
    assert not second.changed
    third = tick(second.cursor, {"t/a.csv": FileState(20, FRESH + 1)})
    assert third.ready == {"t/a.csv": FileState(20, FRESH + 1)}


def test_a_burst_waits_for_its_last_file_then_is_one_change():
    baseline = tick(None, {}).cursor
    burst = {f"t/part-{i:04}.parquet": FileState(100, OLD) for i in range(300)}
    writing = tick(baseline, {**burst, "t/part-0300.parquet._COPYING_": FileState(5, FRESH)})
    assert not writing.changed and len(writing.waiting) == 301
    burst["t/part-0300.parquet"] = FileState(100, OLD)
    done = tick(writing.cursor, burst)
    assert len(done.ready) == 301


def test_removed_file_is_a_change():
    seen = tick(None, {"t/a.csv": FileState(10, OLD), "t/b.csv": FileState(10, OLD)}).cursor
    plan = tick(seen, {"t/a.csv": FileState(10, OLD)})
    assert plan.changed and plan.removed == 1 and plan.changed_files == 1 and not plan.ready
    assert not tick(plan.cursor, {"t/a.csv": FileState(10, OLD)}).changed


def test_a_file_copied_in_with_an_older_time_is_a_change():
    # `cp -p` and some sync tools keep the source's modified time: the watermark misses it, the digest does not.
    seen = tick(None, {"t/a.csv": FileState(10, OLD)}).cursor
    plan = tick(seen, {"t/a.csv": FileState(10, OLD), "t/b.csv": FileState(7, OLD - 600)})
    assert plan.changed and plan.changed_files == 1 and not plan.waiting
    assert not tick(plan.cursor, {"t/a.csv": FileState(10, OLD), "t/b.csv": FileState(7, OLD - 600)}).changed


def test_the_cursor_stays_small_however_many_files_a_table_has():
    files = {
        f"container/landing/shop/orders/year=2026/part-{i:06}.parquet": FileState(4096, OLD) for i in range(20_000)
    }
    seen = tick(None, files).cursor
    assert len(json.dumps(seen)) < 120
    new = {**files, "container/landing/shop/orders/year=2026/part-020000.parquet": FileState(4096, OLD + 5)}
    plan = tick(seen, new)
    assert list(plan.ready) == ["container/landing/shop/orders/year=2026/part-020000.parquet"]
    assert len(json.dumps(plan.cursor)) < 120
    assert not tick(plan.cursor, new).changed, "the files already processed start nothing"


def test_a_cursor_of_the_earlier_format_keeps_working():
    earlier = {"seen": {"t/a.csv": [10, OLD, None]}, "pending": {}}
    assert not tick(earlier, {"t/a.csv": FileState(10, OLD)}).changed
    plan = tick(earlier, {"t/a.csv": FileState(10, OLD), "t/b.csv": FileState(3, OLD + 1)})
    assert list(plan.ready) == ["t/b.csv"] and "seen" not in plan.cursor


def test_incremental_hour_folder_is_processed_once_the_hour_is_over():
    assert hour_folder_closes_at("c/x/IncrementalData/2026/06/30/15/Upserts/1.csv") == datetime(
        2026, 6, 30, 16, tzinfo=UTC
    )
    baseline = tick(None, {}).cursor
    files = {
        "c/x/IncrementalData/2026/06/30/14/Upserts/1.csv": FileState(5, OLD),
        "c/x/IncrementalData/2026/06/30/15/Upserts/2.csv": FileState(5, FRESH),
    }
    plan = tick(baseline, files)
    # The closed 14:00 folder goes now; the open 15:00 folder neither runs nor holds the closed one back.
    assert list(plan.ready) == ["c/x/IncrementalData/2026/06/30/14/Upserts/1.csv"]
    assert "closes at 2026-06-30 16:00 UTC" in plan.waiting["c/x/IncrementalData/2026/06/30/15/Upserts/2.csv"]
    later = tick(plan.cursor, files, now=datetime(2026, 6, 30, 16, 5, tzinfo=UTC))
    assert list(later.ready) == ["c/x/IncrementalData/2026/06/30/15/Upserts/2.csv"]


def test_run_key_is_stable_for_the_same_batch():
    digest = listing_digest({"a": FileState(1, 2.0, "e")})
    assert run_key({"crm/contacts": digest, "shop/orders": "x"}) == run_key(
        {"shop/orders": "x", "crm/contacts": digest}
    )
    assert run_key({"crm/contacts": digest}) != run_key({"crm/contacts": listing_digest({"a": FileState(2, 2.0, "e")})})
