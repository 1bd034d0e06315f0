"""The SQLite sink writes only the rows that changed, known by their content hashes, and counts bytes as it writes."""

from __future__ import annotations

import random
import sqlite3

import numpy as np
import pandas as pd
import pyarrow as pa

from ci_pipeline import outputs
from ci_pipeline.dataverse.prepare import prepare
from ci_pipeline.dataverse.sqlite import FINGERPRINTS, SqliteSink, _Merge


def keys_table(customers: int, changed: dict[int, str] | None = None) -> pd.DataFrame:
    """Two records per customer; ``changed`` gives some records another customer id."""
    n = customers * 2
    owner = [f"C{i // 2}" for i in range(n)]
    for record, customer in (changed or {}).items():
        owner[record] = customer
    return pd.DataFrame(
        {
            "DataSourceName": ["crm"] * n,
            "EntityName": ["contacts"] * n,
            "AlternateValue": [f"k{i}" for i in range(n)],
            "KeyRing": ["[]"] * n,
            "CustomerId": owner,
        }
    )


def profile_table(ids, names=None) -> pd.DataFrame:
    return pd.DataFrame({"CustomerId": list(ids), "FullName": names or [f"Zoë {i}" for i in ids]})


def publish(sink, table: str, frame: pd.DataFrame):
    return sink.publish(prepare(table, outputs.build(table, frame)))


def scanned_bytes(path, table: str) -> int:
    with sqlite3.connect(path) as db:
        columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
        length = " + ".join(f'coalesce(length(CAST("{c}" AS BLOB)), 0)' for c in columns)
        return db.execute(f'SELECT coalesce(sum({length}), 0) FROM "{table}"').fetchone()[0]


def test_a_rerun_with_one_changed_row_writes_that_row_only(tmp_path):
    path = tmp_path / "sink.sqlite"
    ids = [f"C{i}" for i in range(500)]
    with SqliteSink(path) as sink:
        first = publish(sink, "AlternateKey", keys_table(500))
        assert (first.upserted, first.unchanged, first.deleted) == (1000, 0, 0)
        # Record k7 moves from customer C3 to C0: one row of AlternateKey differs, nothing else.
        again = publish(sink, "AlternateKey", keys_table(500, {7: "C0"}))
        assert (again.upserted, again.unchanged, again.deleted) == (1, 999, 0)
        renamed = publish(sink, "CustomerProfile", profile_table(ids))
        names = [f"Zoë {i}" for i in ids]
        names[42] = "Zoë Renamed"
        renamed = publish(sink, "CustomerProfile", profile_table(ids, names))
        assert (renamed.upserted, renamed.unchanged) == (1, 499)
        assert sink.read("msdynci_customerprofile", where={"msdynci_customerid": "C42"})["msdynci_fullname"][0] == (
            "Zoë Renamed"
        )
        content = sink.dump()
    with SqliteSink(tmp_path / "clean.sqlite") as clean:
        publish(clean, "AlternateKey", keys_table(500, {7: "C0"}))
        publish(clean, "CustomerProfile", profile_table(ids, names))
        assert clean.dump() == content


def test_an_unchanged_run_writes_no_row_and_leaves_the_sink_file_byte_identical(tmp_path):
    path = tmp_path / "sink.sqlite"
    with SqliteSink(path) as sink:
        publish(sink, "AlternateKey", keys_table(50))
        publish(sink, "CustomerProfile", profile_table(["C0"]))
    before = path.read_bytes()
    with SqliteSink(path) as sink:
        result = publish(sink, "AlternateKey", keys_table(50))
        publish(sink, "CustomerProfile", profile_table(["C0"]))
        assert (result.upserted, result.deleted, result.unchanged) == (0, 0, 100)
    assert path.read_bytes() == before
    with SqliteSink(path) as sink:
        # The generation still moves with every change, so a state out of step with the sink is still told.
        marker = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
        changed = publish(sink, "AlternateKey", keys_table(50, {3: "C9"}))
        assert (changed.upserted, changed.unchanged) == (1, 99)
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == marker + 1


def test_a_deleted_customers_rows_go(tmp_path):
    path = tmp_path / "sink.sqlite"
    with SqliteSink(path) as sink:
        publish(sink, "CustomerProfile", profile_table(["C0", "C1", "C2"]))
        publish(sink, "AlternateKey", keys_table(3))
        # C1's two records were deleted at the source: C1 and both its keys disappear.
        kept = keys_table(3)[lambda f: f["CustomerId"] != "C1"]
        profile = publish(sink, "CustomerProfile", profile_table(["C0", "C2"]))
        keys = publish(sink, "AlternateKey", kept)
        assert (profile.deleted, profile.upserted, keys.deleted, keys.upserted) == (1, 0, 2, 0)
        assert set(sink.read("msdynci_alternatekey")["msdynci_customerid"]) == {"C0", "C2"}
        assert "C1" not in set(sink.read("msdynci_customerprofile")["msdynci_customerid"])
        assert keys.bytes == scanned_bytes(path, "msdynci_alternatekey")


def test_bytes_are_counted_while_writing_and_match_a_scan(tmp_path):
    path = tmp_path / "sink.sqlite"
    with SqliteSink(path) as sink:
        first = publish(sink, "CustomerProfile", profile_table(["C0", "C1", "C2"], ["Zoë", "Åsa Öberg", "Bo"]))
        assert first.bytes == scanned_bytes(path, "msdynci_customerprofile")
        second = publish(sink, "CustomerProfile", profile_table(["C0", "C3"], ["Zoë Ångström", "Ann"]))
        assert second.bytes == scanned_bytes(path, "msdynci_customerprofile")
        usage = sink.usage()["msdynci_customerprofile"]
        assert (usage.rows, usage.bytes) == (2, second.bytes)


def test_a_lost_or_stale_state_file_is_rebuilt_from_the_rows(tmp_path):
    path = tmp_path / "sink.sqlite"
    with SqliteSink(path) as sink:
        publish(sink, "AlternateKey", keys_table(20))
    (tmp_path / "sink.sqlite-state").unlink()
    for leftover in tmp_path.glob("sink.sqlite-state-*"):
        leftover.unlink()
    with SqliteSink(path) as sink:
        result = publish(sink, "AlternateKey", keys_table(20, {3: "C9"}))
        assert (result.upserted, result.unchanged) == (1, 39)
        assert result.bytes == scanned_bytes(path, "msdynci_alternatekey")
    # A commit that reached the sink but not its state (a crash between the two files): the generations differ.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE msdynci_alternatekey SET msdynci_customerid = 'C1' WHERE msdynci_alternatevalue = 'k5'")
        db.execute("PRAGMA user_version = 999")
    with SqliteSink(path) as sink:
        result = publish(sink, "AlternateKey", keys_table(20, {3: "C9"}))
        assert (result.upserted, result.unchanged) == (1, 39)
        assert sink.read("msdynci_alternatekey", where={"msdynci_alternatevalue": "k5"})["msdynci_customerid"][0] == (
            "C2"
        )
        with SqliteSink(tmp_path / "clean.sqlite") as clean:
            publish(clean, "AlternateKey", keys_table(20, {3: "C9"}))
            assert clean.dump() == sink.dump()
    # Hashes of another hash function (another DuckDB) are computed again, not taken for changed rows.
    with sqlite3.connect(tmp_path / "sink.sqlite-state") as db:
        db.execute("UPDATE table_state SET hasher = 'an older hash', fingerprints = NULL")
    with SqliteSink(path) as sink:
        result = publish(sink, "AlternateKey", keys_table(20))
        assert (result.upserted, result.unchanged) == (1, 39)


def test_the_comparison_with_held_rows_finds_the_same_rows_for_keys_of_any_width():
    def fingerprints(keys: list[str], hashes: dict[str, int]) -> pa.Table:
        return pa.table([keys, [hashes[k] for k in keys], [1] * len(keys)], schema=FINGERPRINTS)

    rng = random.Random(7)
    # GUIDs (one width: compared as bytes), keys of several widths and keys with NUL bytes (looked up by hash).
    kinds = [
        lambda: f"{rng.getrandbits(128):032x}",
        lambda: f"k{rng.randrange(10**5)}",
        lambda: rng.choice(["a", "a\x00", "b\x00b", "é"]) + f"{rng.randrange(99):02d}",
    ]
    for trial in range(60):
        key = kinds[trial % 3]
        held = sorted({key() for _ in range(rng.randrange(1, 200))})
        old = {k: rng.randrange(3) for k in held}
        new_keys = sorted(set(rng.sample(held, rng.randrange(len(held) + 1))) | {key() for _ in range(30)})
        new = {k: old.get(k, 0) if rng.random() < 0.8 else rng.randrange(3) for k in new_keys}
        merge = _Merge(fingerprints(held, old))
        table = fingerprints(new_keys, new)
        changed = np.concatenate([merge.changed(table.slice(at, 25)) + at for at in range(0, len(new_keys), 25)])
        assert [new_keys[i] for i in changed] == [k for k in new_keys if old.get(k) != new[k]]
        assert merge.stale().to_pylist() == [k for k in held if k not in new]
