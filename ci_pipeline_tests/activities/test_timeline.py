"""The unified timeline on tiny frames: placement through alternate keys, quarantine reasons, stable IDs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ci_pipeline.activities import AcceptedDates, QuarantinedCustomers, build_timeline
from ci_pipeline.config.activities import ActivityTable
from ci_pipeline.config.sources import TableConfig
from ci_pipeline.errors import UserError
from ci_pipeline.outputs import UNIFIED_ACTIVITY_COLUMNS, guid
from ci_pipeline_tests.conftest import ROOT

NOW = pd.Timestamp("2026-07-01T00:00:00Z")


def alternate_key():
    return pd.DataFrame(
        {
            "DataSourceName": ["shop", "shop", "club"],
            "EntityName": ["customers", "customers", "members"],
            "AlternateValue": ["1", "2", "m1"],
            "KeyRing": ["[]"] * 3,
            "CustomerId": ["C-A", "C-B", "C-A"],
            "AlternateKeyId": ["x"] * 3,
            "msdynci_identifier": ["x"] * 3,
        }
    )


ORDERS = ActivityTable.model_validate(
    {
        "source": "shop",
        "table": "orders",
        "type": "SalesOrder",
        "timestamp": "order_date",
        "title": "status",
        "fields": {"amount": "total", "is_return": "ret"},
        "customer": {"source": "shop", "table": "customers", "column": "customer_id"},
    }
)
POINTS = ActivityTable.model_validate(
    {
        "source": "club",
        "table": "points",
        "type": "Loyalty",
        "timestamp": "when",
        "timestamp_format": "%m/%d/%Y",
        "fields": {"points": "pts"},
        "customer": {"source": "club", "table": "members", "column": "member_id"},
    }
)


def orders():
    return pd.DataFrame(
        {
            "order_id": ["o3", "o1", "o2", "o4", "o5"],
            "customer_id": [2, 1, 1, 9, 1],
            "order_date": pd.to_datetime(
                ["2026-01-03 00:00", "2026-01-01 10:00", "2026-01-02 00:00", "2026-01-04 00:00", "2027-01-01 00:00"]
            ),
            "total": [30.0, 10.5, None, 40.0, 1.0],
            "ret": [False, False, True, False, False],
            "status": ["done", "done", "returned", "done", "done"],
        }
    )


def points():
    return pd.DataFrame(
        {"transaction_id": ["p1", "p2"], "member_id": ["m1", "m1"], "when": ["02/01/2026", "not a date"], "pts": [5, 7]}
    )


def build():
    return build_timeline(
        {"orders": (ORDERS, orders(), "order_id"), "points": (POINTS, points(), "transaction_id")},
        alternate_key(),
        NOW,
    )


def test_activities_reach_their_customer_through_alternate_keys():
    result = build()
    # UnifiedActivity comes in the order it is published in: by its key, the GUID.
    unified = result.unified.sort_values("ActivityId", ignore_index=True)
    assert result.unified["msdynci_unifiedactivityid"].is_monotonic_increasing
    assert list(unified.columns) == UNIFIED_ACTIVITY_COLUMNS
    assert unified["ActivityId"].tolist() == ["club_points_p1", "shop_orders_o1", "shop_orders_o2", "shop_orders_o3"]
    assert unified["CustomerId"].tolist() == ["C-A", "C-A", "C-A", "C-B"]
    assert unified["ActivityType"].tolist() == ["Loyalty", "SalesOrder", "SalesOrder", "SalesOrder"]
    first = unified.iloc[1]
    assert first["RangeIndex"] == str(int(pd.Timestamp("2026-01-01T10:00Z").timestamp()))
    assert first["msdynci_unifiedactivityid"] == guid("UnifiedActivity|shop_orders_o1")
    assert first["SemanticData"] == json.dumps({"amount": 10.5, "is_return": False}, sort_keys=True)
    assert json.loads(unified.iloc[2]["SemanticData"]) == {"amount": None, "is_return": True}
    assert first["Title"] == "done" and pd.isna(first["URL"])
    assert str(unified["ActivityTimeStamp"].dt.tz) == "UTC"


def test_the_docs_give_the_order_unified_activity_is_stored_in():
    unified = build().unified
    assert unified["msdynci_unifiedactivityid"].is_monotonic_increasing
    assert not unified["ActivityId"].is_monotonic_increasing  # so the order the docs give matters
    docs = (ROOT / "docs" / "config" / "activities.md").read_text(encoding="utf-8")
    assert "stored in `msdynci_unifiedactivityid` (GUID) order" in docs and "sorted by `ActivityId`" not in docs


def test_unplaceable_rows_are_quarantined_with_their_reason_never_dropped():
    result = build()
    reasons = dict(zip(result.corrupt["SourceActivityId"], result.corrupt["Reason"], strict=True))
    assert "no shop.customers record with key '9'" in reasons["o4"]
    assert "in the future" in reasons["o5"]
    assert "cannot be parsed" in reasons["p2"]
    assert json.loads(result.corrupt.set_index("SourceActivityId").loc["o4", "Record"])["order_id"] == "o4"
    for name, read in result.rows_read.items():
        accepted = (result.facts["Activity"] == name).sum()
        assert read == accepted + (result.corrupt["Activity"] == name).sum()


def test_a_text_timestamp_outside_date_range_is_quarantined_as_a_declared_datetime_is_at_ingest():
    text = orders().astype({"order_date": "string"})
    text.loc[0, "order_date"] = "1899-12-30 00:00:00"  # Excel's day zero, a sentinel
    result = build_timeline({"orders": (ORDERS, text, "order_id")}, alternate_key(), NOW)
    reasons = dict(zip(result.corrupt["SourceActivityId"], result.corrupt["Reason"], strict=True))
    assert reasons["o3"] == (
        "timestamp order_date '1899-12-30 00:00:00' is outside the accepted dates 1900-01-01..2199-12-31; see "
        "sources.shop.tables.orders.date_range"
    )
    assert "o3" not in set(result.unified["SourceActivityId"])
    # The table's (or the column's) own date_range is the bound, as at ingest.
    table = TableConfig.model_validate(
        {"format": "csv", "path": "o.csv", "primary_key": "order_id", "date_range": {"min": "1800-01-01"}}
    )
    dates = AcceptedDates.of(ORDERS, table)
    assert not dates.outside(pd.Series(pd.to_datetime(["1899-12-30"], utc=True))).any()
    assert dates.key == "sources.shop.tables.orders.date_range"


def test_an_activity_of_a_customer_record_quarantined_at_ingest_says_so_and_where():
    # Customer 9 is in the export, but ingest quarantined its line: "no record with key '9'" would mislead.
    rows = pd.DataFrame({"key": [" 9", "9", None], "line": [12, 40, 7], "reason": ["bad date", "dup", "no key"]})
    quarantined = {("shop", "customers"): QuarantinedCustomers("shop/customers_corrupt", rows)}
    result = build_timeline({"orders": (ORDERS, orders(), "order_id")}, alternate_key(), NOW, quarantined)
    reasons = dict(zip(result.corrupt["SourceActivityId"], result.corrupt["Reason"], strict=True))
    assert reasons["o4"] == (
        "the shop.customers record with key '9' was quarantined at ingest, see shop/customers_corrupt: line 12, "
        "bad date; fix that row of shop.customers: the activity is placed on the next run"
    )
    assert "in the future" in reasons["o5"]
    assert result.rows_read["orders"] == len(result.facts) + len(result.corrupt)


def test_quarantine_reasons_of_one_cause_count_together_whatever_their_values_and_lines():
    from ci_pipeline.defs.activities import reason_kinds

    reasons = pd.Series(
        [
            "the c.t record with key '1' was quarantined at ingest, see c/t_corrupt: line 12, bad value 'x'; fix it",
            "the c.t record with key '2' was quarantined at ingest, see c/t_corrupt: line 40, bad value 'y'; fix it",
        ]
    )
    assert reason_kinds(reasons).nunique() == 1


def test_a_customer_key_written_with_blanks_around_it_reaches_its_customer():
    # Ingest trims primary keys, so the customers' keys are trimmed: a reference to one is read the same way.
    padded = points().assign(member_id=[" m1 ", "m1\t"], when=["02/01/2026", "02/02/2026"])
    result = build_timeline({"points": (POINTS, padded, "transaction_id")}, alternate_key(), NOW)
    assert result.corrupt.empty
    assert result.unified["CustomerId"].tolist() == ["C-A", "C-A"]


def test_output_is_deterministic_whatever_the_input_order():
    a = build().unified
    shuffled = build_timeline(
        {"orders": (ORDERS, orders().iloc[::-1], "order_id"), "points": (POINTS, points(), "transaction_id")},
        alternate_key(),
        NOW,
    ).unified
    pd.testing.assert_frame_equal(a, shuffled)


def test_facts_keep_typed_semantic_fields_for_measures():
    facts = build().facts
    orders_facts = facts[facts["Activity"] == "orders"]
    assert orders_facts["amount"].tolist()[0] == 10.5
    assert facts.loc[facts["Activity"] == "points", "points"].tolist() == [5]


def test_duplicate_and_empty_keys_are_quarantined():
    frame = orders().iloc[:3].copy()
    frame["order_id"] = ["o1", "o1", None]
    result = build_timeline({"orders": (ORDERS, frame, "order_id")}, alternate_key(), NOW)
    assert result.unified.empty
    assert sorted(result.corrupt["Reason"].str.split(" '").str[0]) == [
        "primary key order_id",
        "primary key order_id",
        "primary key order_id is empty",
    ]


def test_bulk_guids_equal_the_one_by_one_guid():
    from ci_pipeline.outputs import guids

    values = pd.Series(["UnifiedActivity|shop_orders_o1", "é|ü|漢字", "", "a" * 500])
    assert guids(values).tolist() == [guid(v) for v in values]
    assert guids(pd.Series([], dtype="string")).empty


def test_activity_config_problems_name_the_key():
    from ci_pipeline.config import ProjectConfig

    config = ProjectConfig.model_validate(
        {
            "sources": {
                "shop": {"owner": "o", "tables": {"orders": {"format": "parquet", "path": "o", "primary_key": "id"}}}
            },
            "activities": {
                "tables": {
                    "orders": {
                        "source": "shop",
                        "table": "orders",
                        "type": "SalesOrder",
                        "timestamp": "ts",
                        "customer": {"source": "shop", "table": "customers", "column": "cid"},
                    },
                    "ghost": {
                        "source": "nowhere",
                        "table": "x",
                        "type": "Custom",
                        "timestamp": "ts",
                        "customer": {"source": "shop", "table": "orders", "column": "cid"},
                    },
                }
            },
        }
    )
    problems = config.cross_reference_problems()
    assert "activities.tables: activities are found through the unified customers; add a 'unify' section" in problems
    assert any(p.startswith("activities.tables.orders.customer: no table 'customers'") for p in problems)
    assert any(p.startswith("activities.tables.ghost: no table 'x' in source 'nowhere'") for p in problems)


def test_missing_columns_are_a_clear_error():
    from ci_pipeline.errors import UserError

    with pytest.raises(UserError, match="activities.tables.orders: column\\(s\\) order_date not in shop.orders"):
        build_timeline({"orders": (ORDERS, orders().drop(columns="order_date"), "order_id")}, alternate_key(), NOW)


def test_semantic_text_is_the_json_dumps_text_escapes_included():
    from ci_pipeline.activities.jsoncols import json_objects

    texts = ["plain", 'say "hi"', "back\\slash", "line\nbreak", "tab\t", "café", "漢字", "", None, "~ !#[]", "\x7f"]
    frame = pd.DataFrame({"t": pd.Series(texts, dtype="string"), "n": range(len(texts))})
    expected = [json.dumps({"n": n, "t": t}, sort_keys=True) for n, t in enumerate(texts)]
    assert json_objects(frame).tolist() == expected
    assert json_objects(frame.astype({"t": object})).tolist() == expected


def _shop_table_b() -> ActivityTable:
    """A custom activity table "b" of source "shop" with one field, n, placed through shop's customers."""
    return ActivityTable.model_validate(
        {
            "source": "shop",
            "table": "b",
            "type": "Custom",
            "timestamp": "ts",
            "fields": {"n": "n"},
            "customer": {"source": "shop", "table": "customers", "column": "cid"},
        }
    )


def test_tables_whose_activity_ids_interleave_are_merged_in_activity_id_order():
    # Table "b" keys "c_2" and "z_0" give b's ids around those of table "b_c": the tables cannot go end to end.
    plain = _shop_table_b()
    nested = plain.model_copy(update={"table": "b_c", "fields": {"m": "m"}})

    def frame(keys, column):
        return pd.DataFrame({"id": keys, "cid": ["1"] * len(keys), "ts": pd.Timestamp("2026-01-01"), column: [1, 2]})

    result = build_timeline(
        {"x": (plain, frame(["z_0", "c_2"], "n"), "id"), "y": (nested, frame(["3", "1"], "m"), "id")},
        alternate_key(),
        NOW,
    )
    ids = ["shop_b_c_1", "shop_b_c_2", "shop_b_c_3", "shop_b_z_0"]
    assert result.facts["ActivityId"].tolist() == ids
    assert sorted(result.unified["ActivityId"]) == ids
    # The facts' field columns follow the activity names (x's before y's), whatever the id order.
    assert list(result.facts.columns)[-2:] == ["n", "m"]
    assert result.facts["n"].fillna(0).tolist() == [0, 2, 0, 1]


def test_tables_that_follow_one_another_keep_the_column_order_of_the_activity_names():
    result = build_timeline(
        {"b_points": (POINTS, points().iloc[:1], "transaction_id"), "a_orders": (ORDERS, orders(), "order_id")},
        alternate_key(),
        NOW,
    )
    assert result.facts["ActivityId"].tolist()[0] == "club_points_p1"
    assert list(result.facts.columns)[-3:] == ["amount", "is_return", "points"]


def write(tables, tmp_path, now=NOW):
    """write_timeline of frames into a lake under ``tmp_path``: (stored result, lake)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from ci_pipeline.activities import ActivitySource, write_timeline
    from ci_pipeline.lake import Lake

    lake = Lake.local(tmp_path / "lake")
    sources = {
        name: ActivitySource(spec, key, ds.dataset(pa.Table.from_pandas(frame, preserve_index=False)))
        for name, (spec, frame, key) in tables.items()
    }
    (tmp_path / "work").mkdir()
    stored = write_timeline(
        sources, alternate_key(), now, lake, ("a/unified.parquet", "a/facts.parquet"), tmp_path / "work"
    )
    return stored, lake


def test_repeated_activity_ids_are_counted_like_duplicated_on_the_facts(tmp_path):
    # Two activity names on one table place every row twice, under the same ActivityIds.
    stored, lake = write({"a": (ORDERS, orders(), "order_id"), "b": (ORDERS, orders(), "order_id")}, tmp_path)
    facts = lake.read_parquet(stored.facts.path)
    assert stored.repeated_activity_ids == int(facts["ActivityId"].duplicated().sum()) == 3
    # Equal ids keep the order of the activity names.
    assert facts["Activity"].tolist() == ["a", "b"] * 3
    assert stored.customers == 2 and stored.per_type == {"SalesOrder": 6}
    assert stored.facts.rows == stored.unified.rows == 6
    assert lake.find("a") == ["a/facts.parquet", "a/unified.parquet"]


def test_unified_activity_is_stored_for_fast_reading_and_the_facts_small(tmp_path):
    import pyarrow.parquet as pq

    stored, lake = write({"a": (ORDERS, orders(), "order_id")}, tmp_path)

    def codecs(path):
        meta = pq.read_metadata(lake.path(path))
        return {meta.row_group(0).column(i).compression for i in range(meta.num_columns)}

    # Read whole three times a run for once written (sink, export, next run): LZ4; the facts, read by column: zstd.
    assert codecs(stored.unified.path) == {"LZ4"} and codecs(stored.facts.path) == {"ZSTD"}


def test_a_table_placed_in_batches_gives_what_it_gives_in_one(tmp_path, monkeypatch):
    from ci_pipeline.activities import ordered

    # Float keys, whole in the first batches only; a key repeated across batches; unknown customers in between.
    frame = pd.DataFrame(
        {
            "order_id": [1.0, 2.0, 3.0, 4.0, 2.0, 5.5, 6.0],
            "customer_id": [1, 2, 9, 1, 2, 1, 2],
            "order_date": pd.to_datetime([f"2026-01-0{d}" for d in range(1, 8)]),
            "total": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            "ret": [False] * 7,
            "status": ["done"] * 7,
        }
    )
    tables = {"orders": (ORDERS, frame, "order_id"), "points": (POINTS, points(), "transaction_id")}
    whole = build_timeline(tables, alternate_key(), NOW)
    monkeypatch.setattr(ordered, "BATCH_ROWS", 2)
    batched = build_timeline(tables, alternate_key(), NOW)
    pd.testing.assert_frame_equal(batched.unified, whole.unified)
    pd.testing.assert_frame_equal(batched.facts, whole.facts)
    pd.testing.assert_frame_equal(batched.corrupt, whole.corrupt)
    assert batched.rows_read == whole.rows_read == {"orders": 7, "points": 2}
    ids = whole.facts["ActivityId"].tolist()
    assert ids == ["club_points_p1", "shop_orders_1.0", "shop_orders_4.0", "shop_orders_5.5", "shop_orders_6.0"]
    reasons = dict(zip(whole.corrupt["SourceActivityId"], whole.corrupt["Reason"], strict=True))
    assert reasons["2.0"] == "primary key order_id '2.0' is duplicated"


def test_a_semantic_field_named_like_a_unified_column_in_another_case_keeps_its_values():
    spec = ORDERS.model_copy(update={"url": "status", "fields": {"url": "total"}})
    result = build_timeline({"orders": (spec, orders().iloc[:3], "order_id")}, alternate_key(), NOW)
    assert result.facts["url"].fillna(-1).tolist() == [10.5, -1, 30.0]
    unified = result.unified.set_index("SourceActivityId")
    assert unified["URL"].to_dict() == {"o1": "done", "o2": "returned", "o3": "done"}


def test_a_field_named_like_a_fact_column_in_any_case_is_refused_with_another_name_to_use():
    with pytest.raises(ValueError, match="field 'customerid' is named like the activity facts' own column CustomerId"):
        ORDERS.model_validate({**ORDERS.model_dump(), "fields": {"amount": "total", "customerid": "customer_id"}})
    with pytest.raises(ValueError, match="such as 'source_activitytimestamp'"):
        ORDERS.model_validate({**ORDERS.model_dump(), "fields": {"activitytimestamp": "order_date"}})


def test_a_field_one_activity_holds_as_numbers_and_another_as_text_is_a_clear_error():
    spec = ActivityTable.model_validate({**POINTS.model_dump(), "fields": {"amount": "pts"}})
    dated = {"when": ["02/01/2026", "02/02/2026"]}
    tables = {"orders": (ORDERS, orders().iloc[:3], "order_id")}
    with pytest.raises(UserError) as failed:
        build_timeline(
            {**tables, "points": (spec, points().assign(pts=["5", "7"], **dated), "transaction_id")},
            alternate_key(),
            NOW,
        )
    assert str(failed.value).startswith(
        "activities: field 'amount' holds numbers in activity orders but text in activity points: one field of the "
        "timeline has one type; declare the source column's type"
    )
    # A field empty in one activity takes the other's type.
    empty = points().assign(pts=pd.Series([None, None], dtype="string"), **dated)
    result = build_timeline({**tables, "points": (spec, empty, "transaction_id")}, alternate_key(), NOW)
    assert result.rows_read == {"orders": 3, "points": 2}


def test_the_guids_from_sql_digests_are_the_contract_guids(tmp_path):
    import pyarrow as pa

    from ci_pipeline.activities import ordered
    from ci_pipeline.outputs import unified_activity_guids

    ids = pd.Series(["shop_orders_o1", "é|ü|漢字", "", "a" * 500, "quote's"])
    con = ordered.connect(tmp_path / "duckdb")
    # A slice of a longer column, as a batch's column can be.
    guids, heads = ordered.unified_activity_guids(con, pa.array(["x", *ids], pa.large_string()).slice(1))
    assert guids.to_pylist() == unified_activity_guids(ids).tolist()
    assert heads.tolist() == [int(g[:4], 16) for g in guids.to_pylist()]


def test_the_guids_set_the_variant_from_every_digest_digit(tmp_path):
    import duckdb
    import pyarrow as pa

    from ci_pipeline.activities import ordered
    from ci_pipeline.outputs import unified_activity_guids

    ids = pd.DataFrame({"ActivityId": [f"shop_orders_{n}" for n in range(400)]})
    digests = duckdb.sql(f"SELECT {ordered.unified_activity_digest_sql('ActivityId')} FROM ids").fetchall()
    # Every value of the digit the variant is taken from occurs, so each entry of the lookup is checked.
    assert {d[16] for (d,) in digests} == set("0123456789abcdef")
    # A slice: the digests' buffers do not start at the first digest.
    sliced = pa.array([d for (d,) in digests[-1:] + digests], pa.large_string()).slice(1)
    guids, _ = ordered.guids_of_digests(sliced)
    assert guids.to_pylist() == unified_activity_guids(ids["ActivityId"]).tolist()


def test_an_empty_timeline_stores_empty_tables_with_the_columns(tmp_path):
    stored, lake = write({"orders": (ORDERS, orders().iloc[:0], "order_id")}, tmp_path)
    unified = lake.read_parquet(stored.unified.path)
    assert unified.empty and list(unified.columns) == UNIFIED_ACTIVITY_COLUMNS
    assert stored.unified.rows == stored.facts.rows == 0 and stored.customers == 0


def test_the_io_manager_records_a_table_the_step_stored_and_loads_it_as_a_frame(tmp_path):
    import dagster as dg

    from ci_pipeline.defs.resources import LakeParquetIOManager, LakeResource, asset_path

    key = dg.AssetKey(["activities", "unified_activity"])
    stored, lake = write({"orders": (ORDERS, orders(), "order_id")}, tmp_path)
    target = lake.path(asset_path(key))
    import os

    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(lake.path(stored.unified.path), target)
    manager = LakeParquetIOManager(lake=LakeResource(url=str(tmp_path / "lake"), base_dir=str(tmp_path)))
    written = type(stored.unified)(path=asset_path(key), rows=stored.unified.rows, schema=stored.unified.schema)
    context = dg.build_output_context(asset_key=key)
    manager.handle_output(context, written)
    metadata = {k: v.value if hasattr(v, "value") else v for k, v in context.get_logged_metadata().items()}
    assert metadata["dagster/row_count"] == 3
    columns = [c.name for c in context.get_logged_metadata()["dagster/column_schema"].schema.columns]
    assert columns == UNIFIED_ACTIVITY_COLUMNS
    loaded = manager.load_input(dg.build_input_context(asset_key=key))
    assert loaded["ActivityId"].sort_values().tolist() == ["shop_orders_o1", "shop_orders_o2", "shop_orders_o3"]
    with pytest.raises(TypeError, match="stored its table at a/unified.parquet"):
        manager.handle_output(dg.build_output_context(asset_key=key), stored.unified)


@pytest.mark.slow
def test_a_timeline_on_an_azure_lake_reads_and_stores_its_tables_there(azure_container, tmp_path):
    from ci_pipeline.activities import ActivitySource, write_timeline
    from ci_pipeline.config.lake import LakeConfig
    from ci_pipeline.lake import Lake

    config = LakeConfig(url=f"abfs://{azure_container}/lake", connection_string="env:AZURE_TEST_CONNECTION")
    lake = Lake.from_config(config, tmp_path)
    lake.write_parquet("shop/orders.parquet", orders())
    source = ActivitySource(ORDERS, "order_id", lake.dataset("shop/orders.parquet"))
    stored = write_timeline({"orders": source}, alternate_key(), NOW, lake, ("a/u.parquet", "a/f.parquet"), tmp_path)
    assert lake.find("a") == ["a/f.parquet", "a/u.parquet"]
    expected = build_timeline({"orders": (ORDERS, orders(), "order_id")}, alternate_key(), NOW)
    pd.testing.assert_frame_equal(lake.read_parquet(stored.unified.path), expected.unified)
    pd.testing.assert_frame_equal(lake.read_parquet(stored.facts.path), expected.facts)


def test_a_timeline_ordered_in_many_buckets_is_the_one_ordered_in_one(tmp_path, monkeypatch):
    from ci_pipeline.activities import ordered

    # Keys out of order and sorted, ids of two tables interleaving ("shop_b_..." around "shop_b_c_..."), equal
    # ActivityIds (one table placed twice, and x's "c_1" is y's "1"), a field whole in one table, fractional in another.
    spec = _shop_table_b()
    nested = spec.model_copy(update={"table": "b_c"})

    def frame(keys, numbers):
        return pd.DataFrame(
            {"id": keys, "cid": ["1", "2"] * (len(keys) // 2), "ts": pd.Timestamp("2026-01-01"), "n": numbers}
        )

    tables = {
        "x": (spec, frame([f"c_{k}" for k in (9, 3, 7, 1, 8, 2, 6, 4)] + ["a_1", "z_1"], list(range(10))), "id"),
        "y": (nested, frame([str(k) for k in range(10)], [k / 2 for k in range(10)]), "id"),
        "z": (nested, frame([str(k) for k in range(10)], [k / 2 for k in range(10)]), "id"),
    }
    (tmp_path / "one").mkdir()
    whole, lake = write(tables, tmp_path / "one")
    monkeypatch.setattr(ordered, "BATCH_ROWS", 3)
    monkeypatch.setattr(ordered, "BUCKET_ROWS", 4)
    (tmp_path / "many").mkdir()
    bucketed, bucketed_lake = write(tables, tmp_path / "many")
    for path in ("a/unified.parquet", "a/facts.parquet"):
        pd.testing.assert_frame_equal(bucketed_lake.read_parquet(path), lake.read_parquet(path))
    facts = lake.read_parquet("a/facts.parquet")
    assert facts["ActivityId"].is_monotonic_increasing and facts["ActivityId"].iloc[:2].tolist() == [
        "shop_b_a_1",
        "shop_b_c_0",
    ]
    # x's "c_1" and the "1" of y and z are one ActivityId: equal ids keep the order of the activity names.
    assert facts["Activity"].tolist()[1:6] == ["y", "z", "x", "y", "z"] and facts["n"].dtype == "float64"
    unified = lake.read_parquet("a/unified.parquet")
    assert unified["msdynci_unifiedactivityid"].is_monotonic_increasing
    assert (
        (bucketed.customers, bucketed.repeated_activity_ids)
        == (whole.customers, whole.repeated_activity_ids)
        == (2, 18)
    )


def test_key_order_is_a_stable_sort_whatever_the_shape_of_the_keys():
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from ci_pipeline.activities.ordered import key_order

    rng = np.random.default_rng(7)
    shapes = {
        # Short keys of any length, many equal.
        "short": ["".join(rng.choice(list("ab0"), size=rng.integers(0, 4))) for _ in range(300)],
        # Keys of one length that share their first eight bytes in groups (the integer sort's ties).
        "fixed": [f"{rng.integers(0, 3):08d}-{rng.integers(0, 50):02d}" for _ in range(300)],
        # Two sorted runs that overlap, and three that do not.
        "overlapping runs": sorted(f"k{k:03d}" for k in rng.integers(0, 99, 150)) * 2,
        "runs": [f"b{k:03d}" for k in range(100)] + [f"a{k:03d}" for k in range(100)] + ["c"] * 3,
    }
    for name, keys in shapes.items():
        keys = pa.array(keys, pa.large_string())
        assert key_order(keys).tolist() == pc.sort_indices(keys).to_numpy().tolist(), name


def test_each_bucket_holds_its_share_of_the_rows_and_its_key_range(tmp_path, monkeypatch):
    import numpy as np
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from ci_pipeline.activities import ordered
    from ci_pipeline.lake import Lake

    # Fewer files open at once than buckets: a bucket's rows go on in a new file, in order.
    monkeypatch.setattr(ordered, "OPEN_FILES", 2)
    keys = [f"key_{n:05d}" for n in np.random.default_rng(3).permutation(4000)]
    cut = ordered.boundaries(keys[::16], 4)
    table = ordered.SortedTable(tmp_path / "b", "k", len(cut) + 1)
    place = ordered.key_buckets(cut)
    for start in range(0, 4000, 500):
        batch = pa.table({"k": pa.array(keys[start : start + 500], pa.large_string()), "n": range(start, start + 500)})
        table.add(batch, place(batch.column("k")))
    table.close()
    held = [sum(ipc.open_file(f).read_all().num_rows for f in files) for files in table.files]
    # What one bucket holds (what writing it holds at once) is about a quarter of the rows, not all of them.
    assert sum(held) == 4000 and max(held) < 1500 and max(len(files) for files in table.files) > 1
    lake = Lake.local(tmp_path / "lake")
    written, repeated = table.write(lake, "t.parquet", pa.schema([("k", pa.large_string()), ("n", pa.int64())]))
    stored = lake.read_parquet("t.parquet")
    assert stored["k"].tolist() == sorted(keys) and written.rows == 4000 and repeated == 0


def test_json_text_of_a_slice_looks_only_at_its_own_values():
    import pyarrow as pa

    from ci_pipeline.activities.jsoncols import _json_strings

    values = ['say "hi"', "plain", None, "ok", "é\\"]
    text = pa.array(values, pa.string())
    # The slice's values need no escape (the byte check alone); the whole column's do (the value-by-value path).
    for start, stop in ((1, 4), (0, 5)):
        expected = [json.dumps(v) if v is not None else None for v in values[start:stop]]
        assert _json_strings(text.slice(start, stop - start)).to_pylist() == expected


def test_two_ordered_streams_merge_into_one_in_key_order():
    import random

    import pyarrow as pa

    from ci_pipeline.activities.ordered import merged

    rng = random.Random(5)
    for _ in range(30):
        keys = sorted(rng.sample(range(10_000), rng.randrange(0, 60)))
        mine = sorted(rng.sample(keys, rng.randrange(0, len(keys) + 1))) if keys else []
        theirs = sorted(set(keys) - set(mine))

        def parts(values, tag):
            cuts = sorted(rng.sample(range(len(values) + 1), min(3, len(values) + 1)))
            edges = [0, *cuts, len(values)]
            return [
                pa.table({"k": [f"{v:05d}" for v in values[a:b]], "from": [tag] * (b - a)})
                for a, b in zip(edges[:-1], edges[1:], strict=True)
            ]

        out = list(merged(iter(parts(mine, "stored")), iter(parts(theirs, "placed")), "k"))
        joined = pa.concat_tables(out) if out else pa.table({"k": [], "from": []})
        assert joined.column("k").to_pylist() == [f"{v:05d}" for v in keys]
        assert all(len(part) for part in out)
