"""Incremental placing of the timeline: after each change of the activity tables or of the customers, placing only
what changed (from the last run's state and stored tables) gives exactly what placing every row gives."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from ci_pipeline import table_delta
from ci_pipeline.activities import ActivitySource, write_timeline
from ci_pipeline.activities import ordered as ordered_module
from ci_pipeline.activities.incremental import GUID, STATE_DIR, forget, read_state, write_state
from ci_pipeline.config.activities import ActivityTable
from ci_pipeline.lake import Lake

NOW = pd.Timestamp("2026-07-01T00:00:00Z")
PATHS = ("a/unified.parquet", "a/facts.parquet")

ORDERS = ActivityTable.model_validate(
    {
        "source": "shop",
        "table": "orders",
        "type": "SalesOrder",
        "timestamp": "order_date",
        "title": "status",
        "fields": {"amount": "total", "quantity": "qty", "is_return": "ret"},
        "customer": {"source": "shop", "table": "customers", "column": "customer_id"},
    }
)
POINTS = ActivityTable.model_validate(
    {
        "source": "club",
        "table": "points",
        "type": "Loyalty",
        "timestamp": "when",
        "fields": {"points": "pts", "reason": "why"},
        "customer": {"source": "club", "table": "members", "column": "member_id"},
    }
)


def alternate_key(customers: dict[tuple[str, str], str]) -> pd.DataFrame:
    """AlternateKey lookup columns from (table, record key) -> CustomerId."""
    return pd.DataFrame(
        {
            "DataSourceName": [t.split(".")[0] for t, _ in customers],
            "EntityName": [t.split(".")[1] for t, _ in customers],
            "AlternateValue": [k for _, k in customers],
            "CustomerId": list(customers.values()),
        }
    )


def orders(n: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [rng.choice([1, 2, 3, 4, 9]) for _ in range(n)],
            "order_date": [pd.Timestamp("2026-01-01") + pd.Timedelta(days=rng.randrange(200)) for _ in range(n)],
            "total": [rng.choice([None, 10.5, 20.0, 7.25]) for _ in range(n)],
            "qty": pd.array([rng.choice([1, 2, 3]) for _ in range(n)], dtype="int64"),
            "ret": [rng.random() < 0.1 for _ in range(n)],
            "status": [rng.choice(["done", "open", None]) for _ in range(n)],
        }
    )


def points(n: int, seed: int = 1) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame(
        {
            "transaction_id": [f"p{i}" for i in range(n)],
            "member_id": [rng.choice(["m1", "m2", "m3"]) for _ in range(n)],
            "when": [f"2026-0{rng.randrange(1, 7)}-1{rng.randrange(10)}" for _ in range(n)],
            "pts": [rng.choice([5, 10, 50]) for _ in range(n)],
            "why": [rng.choice(["visit", "purchase", None]) for _ in range(n)],
        }
    )


CUSTOMERS = {
    ("shop.customers", "1"): "C-A",
    ("shop.customers", "2"): "C-B",
    ("shop.customers", "3"): "C-C",
    ("shop.customers", "4"): "C-D",
    ("club.members", "m1"): "C-A",
    ("club.members", "m2"): "C-E",
}


def place(lake: Lake, work: Path, tables: dict, customers: dict, now=NOW, previous=None, why="first run"):
    sources = {
        name: ActivitySource(spec, key, ds.dataset(pa.Table.from_pandas(frame, preserve_index=False)))
        for name, (spec, frame, key) in tables.items()
    }
    work.mkdir(parents=True)
    return write_timeline(sources, alternate_key(customers), now, lake, PATHS, work, previous, why)


class Runs:
    """A lake placed run after run from its state, and a fresh lake placed in full each time, compared."""

    def __init__(self, root: Path, lake: Lake | None = None):
        self.root, self.lake, self.count = root, lake or Lake.local(root / "incremental"), 0

    def run(self, tables: dict, customers: dict, now=NOW) -> dict:
        self.count += 1
        previous, why = read_state(self.lake)
        before = self._stored()
        forget(self.lake)
        mine = place(self.lake, self.root / f"work-{self.count}", tables, customers, now, previous, why)
        if mine.state is not None:
            write_state(self.lake, mine.state)
        full_lake = Lake.local(self.root / f"full-{self.count}")
        theirs = place(full_lake, self.root / f"full-work-{self.count}", tables, customers, now)
        for path in PATHS:
            pd.testing.assert_frame_equal(self.lake.read_parquet(path), full_lake.read_parquet(path))
            # Types alike (the frames read back, dtypes included, are compared above).
            assert self.lake.dataset(path).schema.remove_metadata() == full_lake.dataset(path).schema.remove_metadata()
        pd.testing.assert_frame_equal(mine.corrupt, theirs.corrupt)
        for attribute in ("rows_read", "placed", "per_type", "customers", "repeated_activity_ids"):
            assert getattr(mine, attribute) == getattr(theirs, attribute), attribute
        assert mine.unified.rows == theirs.unified.rows and mine.facts.rows == theirs.facts.rows
        # Both UnifiedActivity tables are stamped with one version: the same rows, however they were placed.
        version = table_delta.version_of(self.lake.dataset(PATHS[0]))
        assert version is not None and version == table_delta.version_of(full_lake.dataset(PATHS[0]))
        delta = table_delta.read(self.lake, PATHS[0])
        if delta is not None:
            # The delta leads from the table before this run to this one.
            assert mine.report["incremental"] and (delta.base, delta.version) == (before[0], version)
            assert _rows(_applied(before[1], delta)) == _rows(self.lake.dataset(PATHS[0]).to_table())
        return {**mine.report, "quarantined": len(mine.corrupt), "delta": delta is not None}

    def _stored(self) -> tuple[str | None, pa.Table] | None:
        if not self.lake.exists(PATHS[0]):
            return None
        stored = self.lake.dataset(PATHS[0])
        return table_delta.version_of(stored), stored.to_table()


def _applied(before: pa.Table, delta: table_delta.Delta) -> pa.Table:
    """``before`` without the rows whose GUID left or was placed again, with the placed rows."""
    placed = delta.rows.to_table()
    leaving = pa.concat_arrays(
        [delta.removed.cast(pa.large_string()), placed.column(GUID).combine_chunks().cast(pa.large_string())]
    )
    kept = before.filter(pc.invert(pc.is_in(before.column(GUID).cast(pa.large_string()), value_set=leaving)))
    return pa.concat_tables([kept, placed.cast(kept.schema)])


def _rows(table: pa.Table) -> list[str]:
    return sorted(map(repr, table.to_pylist()))


@pytest.fixture(params=[False, True], ids=["one batch", "many batches and buckets"])
def runs(request, tmp_path, monkeypatch):
    if request.param:
        monkeypatch.setattr(ordered_module, "BATCH_ROWS", 7)
        monkeypatch.setattr(ordered_module, "BUCKET_ROWS", 16)
    return Runs(tmp_path)


def test_each_change_placed_alone_gives_what_placing_every_row_gives(runs):
    shop, club = orders(60), points(20)
    tables = {"orders": (ORDERS, shop, "order_id"), "points": (POINTS, club, "transaction_id")}
    first = runs.run(tables, CUSTOMERS)
    assert not first["incremental"] and first["reason"] == "no state of an earlier run at " + runs.lake.url(
        f"{STATE_DIR}/meta.json"
    )

    # Nothing changed: every row kept but the quarantined ones, checked again (the clock moves, customers come).
    again = runs.run(tables, CUSTOMERS)
    assert first["rows_placed"] + first["rows_quarantined"] == 80 and first["rows_reused"] == 0
    assert first["rows_quarantined"] == first["quarantined"] > 0
    assert again["incremental"] and again["rows_reused"] == 80 - again["rows_quarantined"]
    assert again["rows_placed"] == 0 and again["rows_quarantined"] == first["quarantined"]

    # Appended rows, one of them for a customer that did not exist before, whose record comes now too.
    shop = pd.concat([shop, orders(5, seed=7).assign(order_id=lambda f: "n" + f["order_id"])], ignore_index=True)
    customers = {**CUSTOMERS, ("shop.customers", "9"): "C-F"}
    report = runs.run({**tables, "orders": (ORDERS, shop, "order_id")}, customers)
    assert report["incremental"] and report["rows_removed"] == 0 and report["delta"]

    # A changed value, a deleted row, a key repeated by a new row, a row in the future.
    shop = shop.copy()
    shop.loc[3, "total"] = 99.0
    shop = shop.drop(index=5).reset_index(drop=True)
    shop = pd.concat([shop, shop.iloc[[0]], shop.iloc[[1]].assign(order_date=pd.Timestamp("2027-01-01"))])
    shop.iloc[-1, 0] = "future"
    tables = {"orders": (ORDERS, shop.reset_index(drop=True), "order_id"), "points": tables["points"]}
    report = runs.run(tables, customers)
    assert report["incremental"] and report["rows_removed"] >= 2 and report["delta"]

    # The repetition resolved; a record moved to another customer; a member merged into another customer.
    shop = tables["orders"][1].drop_duplicates("order_id", keep="last").reset_index(drop=True)
    moved = {**customers, ("shop.customers", "2"): "C-A", ("club.members", "m2"): "C-A"}
    report = runs.run({"orders": (ORDERS, shop, "order_id"), "points": tables["points"]}, moved)
    assert report["incremental"]

    # The clock moves on past the future row; a customer record is deleted (its activities are quarantined).
    gone = {k: v for k, v in moved.items() if k != ("shop.customers", "4")}
    report = runs.run(
        {"orders": (ORDERS, shop, "order_id"), "points": tables["points"]}, gone, NOW + pd.DateOffset(years=1)
    )
    assert report["incremental"]


def test_random_increments_keep_incremental_equal_to_full(runs):
    rng = random.Random(3)
    shop, club = orders(40), points(15)
    customers = dict(CUSTOMERS)
    for step in range(6):
        runs.run({"orders": (ORDERS, shop, "order_id"), "points": (POINTS, club, "transaction_id")}, customers)
        new = orders(rng.randrange(1, 6), seed=100 + step).assign(order_id=lambda f, s=step: f"s{s}_" + f["order_id"])
        shop = pd.concat([shop, new], ignore_index=True)
        drop = rng.sample(range(len(shop)), 2)
        shop = shop.drop(index=drop).reset_index(drop=True)
        shop.loc[rng.randrange(len(shop)), "qty"] = rng.randrange(10)
        club = club.sample(frac=1.0, random_state=step).reset_index(drop=True)  # reordered rows
        key = rng.choice(list(customers))
        customers[key] = rng.choice(["C-A", "C-B", "C-X", "C-Y"])


def test_what_makes_every_row_placed_again_says_why(runs, tmp_path):
    tables = {"orders": (ORDERS, orders(30), "order_id"), "points": (POINTS, points(10), "transaction_id")}
    runs.run(tables, CUSTOMERS)
    changed = ORDERS.model_copy(update={"title": None})
    report = runs.run({**tables, "orders": (changed, tables["orders"][1], "order_id")}, CUSTOMERS)
    assert not report["incremental"] and "configuration" in report["reason"]
    tables = {**tables, "orders": (changed, tables["orders"][1], "order_id")}
    earlier = runs.run(tables, CUSTOMERS, NOW - pd.Timedelta(days=1))
    assert not earlier["incremental"] and "earlier than the last run" in earlier["reason"]
    # The stored timeline replaced behind the state's back.
    runs.lake.write_parquet(PATHS[0], runs.lake.read_parquet(PATHS[0]).head(3))
    report = runs.run(tables, CUSTOMERS)
    assert not report["incremental"] and "not the one the state describes" in report["reason"]
    # A damaged state.
    runs.lake.write_bytes(f"{STATE_DIR}/meta.json", b"{not json")
    report = runs.run(tables, CUSTOMERS)
    assert not report["incremental"] and "unreadable" in report["reason"]


def test_a_column_whose_type_the_new_rows_change_places_every_row(runs):
    # Orders alone: with loyalty points beside them, the facts' quantity has missing values (and floats) anyway.
    shop = orders(20).assign(qty=lambda f: f["qty"].astype("int64"))
    tables = {"orders": (ORDERS, shop, "order_id")}
    runs.run(tables, CUSTOMERS)
    # A missing quantity turns the column into floats in its batch: the stored facts' column would change type.
    extra = orders(1, seed=9).assign(order_id="late", qty=None)
    grown = pd.concat([shop, extra], ignore_index=True)
    report = runs.run({**tables, "orders": (ORDERS, grown, "order_id")}, CUSTOMERS)
    assert not report["incremental"] and "columns of" in report["reason"]


def test_a_kept_row_sharing_a_hash_with_a_leaving_one_places_every_row(runs, monkeypatch):
    import duckdb
    import numpy as np

    from ci_pipeline.activities import incremental

    tables = {"orders": (ORDERS, orders(30), "order_id"), "points": (POINTS, points(10), "transaction_id")}
    runs.run(tables, CUSTOMERS)
    shop = tables["orders"][1].drop(index=4).reset_index(drop=True)
    # As if "shop_orders_o1", which stays, had the hash of an ActivityId that leaves.
    with duckdb.connect() as con:
        stays = incremental.id_hashes(con, pa.array(["shop_orders_o1"]))
    removed = incremental.Reuse.removed

    def colliding(self):
        hashes, rows = removed(self)
        return np.unique(np.concatenate([hashes, stays])), rows

    monkeypatch.setattr(incremental.Reuse, "removed", colliding)
    report = runs.run({**tables, "orders": (ORDERS, shop, "order_id")}, CUSTOMERS)
    assert not report["incremental"] and "a hash shared by two ids" in report["reason"]


def test_an_azure_lake_keeps_the_state_and_the_tables_it_merges_from(azure_container, tmp_path):
    from ci_pipeline.config.lake import LakeConfig

    config = LakeConfig(url=f"abfs://{azure_container}/lake", connection_string="env:AZURE_TEST_CONNECTION")
    runs = Runs(tmp_path, Lake.from_config(config, tmp_path))
    shop = orders(40)
    tables = {"orders": (ORDERS, shop, "order_id"), "points": (POINTS, points(10), "transaction_id")}
    assert not runs.run(tables, CUSTOMERS)["incremental"]
    grown = pd.concat([shop.drop(index=2), orders(3, seed=4).assign(order_id=lambda f: "n" + f["order_id"])])
    report = runs.run({**tables, "orders": (ORDERS, grown.reset_index(drop=True), "order_id")}, CUSTOMERS)
    assert report["incremental"] and report["rows_removed"] >= 1
