"""The unified timeline on tiny frames: placement through alternate keys, quarantine reasons, stable IDs."""

from __future__ import annotations

import json

import pandas as pd

from ci_pipeline.activities import build_timeline
from ci_pipeline.config.activities import ActivityTable
from ci_pipeline.outputs import UNIFIED_ACTIVITY_COLUMNS, guid

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
    import pytest

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


def test_tables_whose_activity_ids_interleave_are_merged_in_activity_id_order():
    # Table "b" keys "c_2" and "z_0" give b's ids around those of table "b_c": the tables cannot go end to end.
    plain = ActivityTable.model_validate(
        {
            "source": "shop",
            "table": "b",
            "type": "Custom",
            "timestamp": "ts",
            "fields": {"n": "n"},
            "customer": {"source": "shop", "table": "customers", "column": "cid"},
        }
    )
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


def test_repeated_activity_ids_are_counted_like_duplicated_on_the_sorted_facts():
    from ci_pipeline.defs.activities import repeated_ids

    ids = pd.Series(["a", "b", "b", "b", "c", "d", "d"], dtype="string")
    assert repeated_ids(ids) == int(ids.duplicated().sum()) == 3
    assert repeated_ids(ids.iloc[:1]) == 0 and repeated_ids(ids.iloc[0:0]) == 0
    # The facts a timeline gives are in ActivityId order, which the count relies on.
    facts = build().facts
    assert facts["ActivityId"].is_monotonic_increasing and repeated_ids(facts["ActivityId"]) == 0
